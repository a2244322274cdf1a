"""``python -m candlekeep``: what ``--detach`` and the installed units run, so they work
with this interpreter even where the ``candlekeep`` script is not on PATH."""

from candlekeep.cli.main import app

if __name__ == "__main__":
    app(prog_name="candlekeep")
