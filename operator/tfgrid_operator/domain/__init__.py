"""The pure domain core: grid arithmetic and decisions, no I/O.

Every number cites the section of ``docs/grid-rules.md`` it comes from.
Money is always an ``int`` of smallest units; intermediate maths uses exact fractions.
"""
