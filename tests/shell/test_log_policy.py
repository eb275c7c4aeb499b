"""What is an error in the logs: a wait on the world (a farm that still has nodes) and an Event a terminating
namespace refuses are not, although kopf logs both at ERROR; everything else keeps its level."""

import logging

from tfgrid_operator.handlers import reporting


def record(name: str, level: int, text: str) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, text, (), None)


def test_expected_waits_and_refused_events_become_debug_and_the_rest_is_untouched():
    level = logging.getLogger("kopf.objects").level
    try:
        check_policy()
    finally:
        logging.getLogger("kopf.objects").setLevel(level)


def check_policy() -> None:
    quiet = reporting.ExpectedWaits()
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    blocked = reporting.Blocked("farm 'f' still has 1 active node(s)", delay=1)
    r = record("kopf.objects", logging.ERROR, f"Handler 'delete_farm' failed temporarily: {blocked}")
    assert quiet.filter(r) is False and r.levelno == logging.DEBUG  # dropped unless kopf.objects logs DEBUG
    logging.getLogger("kopf.objects").setLevel(logging.DEBUG)
    r = record("kopf.objects", logging.ERROR, f"Handler 'delete_farm' failed temporarily: {blocked}")
    assert quiet.filter(r) is True and r.levelname == "DEBUG"
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    refused = record("kopf._core.engines.posting", logging.ERROR, "Request attempt #1/3 failed; will retry: POST "
                     "/api/v1/namespaces/a/events -> APIForbiddenError('… because it is being terminated')")
    assert quiet.filter(refused) is False
    for text in ("Handler 'delete_farm' failed temporarily: the ledger is unavailable",  # a real failure
                 "Request attempt #1/3 failed; will retry: POST … -> APIServerError(500)"):
        real = record("kopf.objects", logging.ERROR, text)
        assert quiet.filter(real) is True and real.levelno == logging.ERROR
