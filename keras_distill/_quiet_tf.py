"""Import TensorFlow without its start-up noise on the console.

TensorFlow 2.21 prints, before its logging is set up, about eight lines to
the process's standard error (file descriptor 2) at import and at first
device use: ``WARNING: All log messages before absl::InitializeLog() ...``,
``oneDNN custom operations are on ...``, ``Could not find cuda drivers ...``
and ``E0000 ... failed call to cuInit: ... UNKNOWN ERROR (303)``.
``TF_CPP_MIN_LOG_LEVEL`` does not reach the first three (they are written
before the level is read) and hiding the fourth would need level 3, which
hides real errors later. No public TensorFlow API turns them off, so this
module redirects file descriptor 2 into a temporary file while TensorFlow
loads and initialises its devices, then puts it back and replays every
captured line that is *not* one of these known start-up lines: nothing real
is lost. Command-line entry points call `import_tensorflow` first thing;
library users never see it.
"""

import contextlib
import os
import re
import sys
import tempfile

# The start-up lines dropped (anything else captured is written back).
_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[IWE]\d{4} [\d:.]+ +\d+ (port\.cc|cudart_stub\.cc|cuda_platform\.cc|"
    r"cuda_executor\.cc|cpu_feature_guard\.cc|cuda_dnn\.cc|cuda_fft\.cc|cuda_blas\.cc)"
    r"|To enable the following instructions: .* in other operations, rebuild"
    r"|WARNING: Logging before InitGoogle\(\) is written to STDERR"
    # ... and the lines LiteRT's converter and interpreter print for every file.
    r"|INFO: Created TensorFlow Lite XNNPACK delegate for CPU\."
    r"|fully_quantize: \d+, inference_type: \d+, input_inference_type: )")


def filter_startup_lines(text):
    """``text`` without TensorFlow's known start-up lines.

    Example:
    >>> filter_startup_lines(
    ...     "WARNING: All log messages before absl::InitializeLog() is called are "
    ...     "written to STDERR\\n"
    ...     "E0000 00:00:1795801398.901754    7841 cuda_platform.cc:52] failed call "
    ...     "to cuInit\\nsomething real\\n")
    'something real\\n'
    """
    return "".join(line for line in text.splitlines(keepends=True)
                   if not _NOISE.match(line))


@contextlib.contextmanager
def quiet_stderr():
    """Hides TensorFlow's and LiteRT's known C++ lines while the block runs
    (e.g. ``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.`` for
    every ``.tflite`` file opened); every other line is written back after it.

    Example:
    >>> with quiet_stderr():
    ...     pass
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            captured.seek(0)
            rest = filter_startup_lines(captured.read().decode("utf-8", "replace"))
            if rest:
                sys.stderr.write(rest)
                sys.stderr.flush()


def import_tensorflow():
    """Imports TensorFlow and initialises its devices with start-up lines hidden.

    Sets ``TF_CPP_MIN_LOG_LEVEL=2`` (unless set) first, so later C++ INFO
    and WARNING lines stay hidden too. Does nothing special when TensorFlow
    is already imported.

    Returns:
        The ``tensorflow`` module.

    Example:
    >>> import_tensorflow().__name__
    'tensorflow'
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    with quiet_stderr():
        import tensorflow as tf

        tf.config.list_physical_devices()  # the cuInit line comes here
    return tf
