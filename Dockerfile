# tfgrid-operator image: the package installed from its wheel into a venv, run as a non-root user.
# Build: docker build -t tfgrid-operator:0.1.0 .
# The wheel is installed with no extra: the operator only (the sandbox's emulator, kmock, jsonschema, cel-python
# and rich are `pip install 'tfgrid-operator[sandbox]'`, never in the image).
FROM python:3.11.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN python -m pip install --no-cache-dir build==1.2.2 \
 && python -m build --wheel --outdir /wheels . \
 && python -m venv /venv \
 && /venv/bin/pip install --no-cache-dir /wheels/*.whl

FROM python:3.11.11-slim-bookworm
RUN groupadd --gid 10001 tfgrid && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin tfgrid
COPY --from=build /venv /venv
ENV PATH=/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 TFGRID_LEDGER_URL=sqlite:////data/ledger.db
USER 10001:10001
EXPOSE 8080 9090
ENTRYPOINT ["tfgrid-operator"]
CMD ["run", "--liveness=http://0.0.0.0:8080/healthz"]
