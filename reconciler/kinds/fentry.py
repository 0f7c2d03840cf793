"""FentryProgram and BpfApplication's ``type: FEntry``: a program on a kernel function's entry."""

from reconciler.kernel.types import FentryPoint, ProgType
from reconciler.kinds import ftrace
from reconciler.kinds.record import AppType

KIND = ftrace.make("FentryProgram", ProgType.FENTRY, AppType("FEntry", "fentry"), FentryPoint)
