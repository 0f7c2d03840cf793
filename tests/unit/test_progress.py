"""The progress line (reconciler/progress.py): what it draws, when, and that nothing else
written while it shows is ever glued to it. A fake clock and string streams stand in for time
and the terminal; the pty tests are tests/cli/test_cli_progress.py."""

from __future__ import annotations

import io
import signal
import time
from types import FrameType

import pytest

from reconciler import progress
from reconciler.progress import CLEAR, ProgressLine, render
from reconciler.terminal import SafeStream, paint

ADDR = "TracepointProgram/tp-3[syscalls/sys_enter_getuid]"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def streams(colors: bool = False) -> tuple[io.StringIO, SafeStream, io.StringIO, SafeStream]:
    out, err = io.StringIO(), io.StringIO()
    return out, SafeStream(out, colors=colors), err, SafeStream(err, colors=colors)


def line(out: SafeStream, err: SafeStream, clock: Clock, width: int = 80) -> ProgressLine:
    return ProgressLine(out, (err,), clock=clock, width=lambda: width, interval=None)


# --- the line's text -------------------------------------------------------------------------


def test_render_shows_steps_done_of_the_total_the_address_and_the_time() -> None:
    assert render(3, 8, ADDR, 4.25, 200) == f"[3/8] {ADDR} (4.2s)"
    assert render(8, 8, "", 61.0, 200) == "[8/8] (1m01s)"
    assert render(0, 12, ADDR, 0.0, 200, colors=True) == f"\x1b[1m[0/12]\x1b[0m {ADDR} (0.0s)"


@pytest.mark.parametrize("width", [10, 20, 40, 60, 79])
def test_render_never_reaches_the_last_column(width: int) -> None:
    text = render(3, 8, ADDR, 4.2, width)
    assert len(text) <= width - 1
    assert text.startswith("[3/8]")


def test_a_long_address_is_cut_in_its_middle_and_dropped_when_there_is_no_room() -> None:
    assert render(3, 8, ADDR, 4.2, 40) == "[3/8] TracepointPr…enter_getuid] (4.2s)"
    assert render(3, 8, ADDR, 4.2, 22) == "[3/8] (4.2s)"
    assert render(3, 8, ADDR, 4.2, 5) == "[3/8"


def test_the_address_is_escaped_and_a_width_of_0_means_80_columns() -> None:
    assert render(1, 8, "XdpProgram/x[e\x1b[2Jth0]", 0, 200) == (
        "[1/8] XdpProgram/x[e\\x1b[2Jth0] (0.0s)"
    )
    assert progress._terminal_width(io.StringIO()) == 80


@pytest.mark.parametrize(
    ("seconds", "shown"), [(0, "0.0s"), (0.44, "0.4s"), (59.94, "59.9s"), (125.0, "2m05s")]
)
def test_elapsed_text(seconds: float, shown: str) -> None:
    assert progress.elapsed_text(seconds) == shown


# --- when it is shown ------------------------------------------------------------------------


def test_wanted_on_a_terminal_only_without_json_and_not_on_a_dumb_one() -> None:
    assert progress.wanted(Tty(), json=False, environ={"TERM": "xterm"})
    assert progress.wanted(Tty(), json=False, environ={})
    assert progress.wanted(Tty(), json=False, environ={"TERM": "xterm", "NO_COLOR": "1"})
    assert not progress.wanted(io.StringIO(), json=False, environ={"TERM": "xterm"})
    assert not progress.wanted(Tty(), json=True, environ={"TERM": "xterm"})
    assert not progress.wanted(Tty(), json=False, environ={"TERM": "dumb"})
    assert not progress.wanted(Tty(), json=False, environ={"TERM": "unknown"})


def test_for_command_is_inert_off_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    out = SafeStream(io.StringIO())
    monkeypatch.setattr("sys.stdout", out)
    with ProgressLine.for_command(json=False) as p:
        p.step(0, 50, ADDR)
        out.write("a line\n")
    assert out.getvalue() == "a line\n"
    assert out.overlay is None


def test_a_handful_of_steps_draws_nothing() -> None:
    raw, out, _raw_err, err = streams()
    with line(out, err, Clock()) as p:
        for done in range(progress.HANDFUL):
            p.step(done, progress.HANDFUL, ADDR)
            out.write(f"{ADDR}: Loading...\n")
    assert raw.getvalue() == f"{ADDR}: Loading...\n" * progress.HANDFUL
    assert out.overlay is None


# --- drawing, clearing, and everything else around it ----------------------------------------


def test_each_step_redraws_and_every_other_write_clears_the_line_first() -> None:
    raw, out, raw_err, err = streams()
    clock = Clock()
    with line(out, err, clock) as p:
        p.step(0, 8, "A")
        assert raw.getvalue() == CLEAR + "[0/8] A (0.0s)"
        print("A: Loading...", file=out)  # print: the text, then the newline
        assert raw.getvalue() == CLEAR + "[0/8] A (0.0s)" + CLEAR + "A: Loading...\n"
        clock.now += 1.5
        print("A: Loading complete after 1.5s", file=out)  # not shown now: nothing to clear
        assert raw.getvalue().endswith("A: Loading...\nA: Loading complete after 1.5s\n")
        p.step(1, 8, "B")
        assert raw.getvalue().endswith("\n" + CLEAR + "[1/8] B (1.5s)")
        print("Error: on stderr", file=err)
        # The line is cleared on stdout before stderr gets its text.
        assert raw.getvalue().endswith("[1/8] B (1.5s)" + CLEAR)
        assert raw_err.getvalue() == "Error: on stderr\n"
        clock.now += 0.5
        p.redraw()  # the ticker: the cursor is at the start of a line again
        assert raw.getvalue().endswith(CLEAR + "[1/8] B (2.0s)")
    assert raw.getvalue().endswith(CLEAR)  # cleared for good
    assert out.overlay is None and err.overlay is None
    out.write("Apply complete!\n")
    assert raw.getvalue().endswith(CLEAR + "Apply complete!\n")


def test_no_redraw_in_the_middle_of_a_line() -> None:
    raw, out, _raw_err, err = streams()
    with line(out, err, Clock()) as p:
        p.step(0, 8, "A")
        out.write("half a line")
        p.redraw()
        p.step(1, 8, "B")
        assert raw.getvalue().endswith(CLEAR + "half a line")
        out.write(" and its end\n")
        p.redraw()
        assert raw.getvalue().endswith("half a line and its end\n" + CLEAR + "[1/8] B (0.0s)")


def test_an_error_leaving_the_block_clears_the_line() -> None:
    raw, out, _raw_err, err = streams()
    with pytest.raises(RuntimeError), line(out, err, Clock()) as p:
        p.step(2, 8, "C")
        raise RuntimeError("a step failed")
    assert raw.getvalue() == CLEAR + "[2/8] C (0.0s)" + CLEAR
    assert out.overlay is None


def test_colours_make_the_counter_bold_and_no_colour_leaves_only_cursor_control() -> None:
    raw, out, _raw_err, err = streams(colors=True)
    with line(out, err, Clock()) as p:
        p.step(3, 8, "D")
        out.write(paint("+", "32") + " kept\n")
    assert raw.getvalue() == (
        CLEAR + "\x1b[1m[3/8]\x1b[0m D (0.0s)" + CLEAR + "\x1b[32m+\x1b[0m kept\n"
    )
    raw, out, _raw_err, err = streams(colors=False)
    with line(out, err, Clock()) as p:
        p.step(3, 8, "D")
    assert raw.getvalue() == CLEAR + "[3/8] D (0.0s)" + CLEAR


def test_data_cannot_use_the_lines_control_codes() -> None:
    raw, out, _raw_err, err = streams()
    with line(out, err, Clock()) as p:
        p.step(0, 8, "x\r\x1b[2Ky")
        out.write("z\r\x1b[2K\n")
    assert raw.getvalue() == (CLEAR + "[0/8] x\\x0d\\x1b[2Ky (0.0s)" + CLEAR + "z\\x0d\\x1b[2K\n")


def test_a_signal_clears_the_line_before_its_handler_runs() -> None:
    raw, out, _raw_err, err = streams()
    seen: list[str] = []

    def handler(signum: int, _frame: FrameType | None) -> None:
        seen.append(raw.getvalue())
        err.write(f"received {signal.Signals(signum).name}\n")

    old = signal.signal(signal.SIGINT, handler)
    try:
        with line(out, err, Clock()) as p:
            p.step(4, 8, "E")
            assert signal.getsignal(signal.SIGINT) is not handler
            signal.raise_signal(signal.SIGINT)
            assert seen == [CLEAR + "[4/8] E (0.0s)" + CLEAR]
        assert signal.getsignal(signal.SIGINT) is handler  # given back
    finally:
        signal.signal(signal.SIGINT, old)


def test_the_ticker_redraws_the_time_while_a_step_runs() -> None:
    raw, out, _raw_err, err = streams()
    clock = Clock()
    p = ProgressLine(out, (err,), clock=clock, width=lambda: 80, interval=0.001)
    with p:
        p.step(5, 8, "F")
        clock.now += 3
        deadline = time.monotonic() + 30
        while "(3.0s)" not in raw.getvalue():
            assert time.monotonic() < deadline, raw.getvalue()
            time.sleep(0.001)
    assert raw.getvalue().startswith(CLEAR + "[5/8] F (0.0s)")
    assert raw.getvalue().endswith(CLEAR + "[5/8] F (3.0s)" + CLEAR)
