"""The ``medseg`` command line. Entry point: :func:`medseg.cli.main.main`."""
