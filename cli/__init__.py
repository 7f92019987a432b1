"""The ``synbt`` command line: a thin Typer layer over :mod:`synbt_factory`."""
