"""Running the command line in-process, for the tests that feed it hostile input."""

import contextlib
import io

from dnnlab import cli


def run_cli(argv):
    """``dnnlab ARGV`` in this process: (exit code, stdout, stderr); SystemExit becomes the code."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()
