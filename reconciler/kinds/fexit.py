"""FexitProgram and BpfApplication's ``type: FExit``: a program on a kernel function's exit."""

from reconciler.kernel.types import FexitPoint, ProgType
from reconciler.kinds import ftrace
from reconciler.kinds.record import AppType

KIND = ftrace.make("FexitProgram", ProgType.FEXIT, AppType("FExit", "fexit"), FexitPoint)
