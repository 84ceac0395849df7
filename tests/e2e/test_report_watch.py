"""`kasmina report RUN --watch` against a run another process is writing.

The writer records one epoch each time the test asks on its stdin and says
when it has committed; the watch says on stderr each time it rewrites the
page. So each step waits on the other process's word, never on a clock, and
the page is read only after the watch says it wrote it.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path

from test_report import BIN, marks

WRITER = """
import sys

from kasmina import Ledger
from kasmina.events import EpochCompleted

with Ledger.open(sys.argv[1]) as ledger:
    run = ledger.start_run("live", seed=1, run_id=sys.argv[2])
    print("started", flush=True)
    epoch = 0
    for line in sys.stdin:
        if line.strip() == "finish":
            break
        run.recorder.emit(
            EpochCompleted(val_loss=1.0 / (epoch + 1), metrics={"width": 8.0 + epoch}),
            stream_id="run",
            epoch=epoch,
        )
        run.recorder.flush()
        print(epoch, flush=True)
        epoch += 1
    run.finish()
"""


class Lines:
    """A child's output read line by line, waiting at most ``limit_s`` for each."""

    def __init__(self, stream: object, limit_s: float = 60.0) -> None:
        self.fd = stream.fileno()  # type: ignore[attr-defined]
        self.limit_s = limit_s
        self.buffer = b""

    def next(self) -> str:
        deadline = time.monotonic() + self.limit_s
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            assert left > 0, f"no line within {self.limit_s} s; so far {self.buffer!r}"
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                chunk = os.read(self.fd, 4096)
                assert chunk, f"the process ended; so far {self.buffer!r}"
                self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()


def _points(html: str, metric: str) -> int:
    """Points drawn on ``metric``'s chart."""
    chart = html.split(f'data-metric="{metric}"')[1].split("</svg>")[0]
    found = re.search(r'class="metric"[^>]*d="([^"]*)"', chart)
    return 0 if found is None else len(re.findall("[ML]", found.group(1)))


def test_watch_rewrites_the_page_as_another_process_writes_the_run(
    db_url: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KASMINA_DB"}
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, db_url, "live-run"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    (tmp_path / "out").mkdir()
    page = tmp_path / "out" / "live.html"
    watch = None
    try:
        assert writer.stdin is not None and writer.stdout is not None
        said = Lines(writer.stdout)
        assert said.next() == "started"
        writer.stdin.write(b"epoch\n")
        writer.stdin.flush()
        assert said.next() == "0"

        watch = subprocess.Popen(
            [
                BIN,
                "--db",
                db_url,
                "report",
                "live-run",
                "--watch",
                "--every",
                "0.2",
                "-o",
                str(page),
                "-m",
                "val_loss",
                "-m",
                "width",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        assert watch.stderr is not None
        wrote = Lines(watch.stderr)
        assert wrote.next() == f"wrote {page} (2 events, open)"
        html = page.read_text(encoding="utf-8")
        assert '<meta http-equiv="refresh" content="1">' in html and "class=live" in html
        assert _points(html, "val_loss") == 1 and _points(html, "width") == 1

        for epoch in (1, 2):
            writer.stdin.write(b"epoch\n")
            writer.stdin.flush()
            assert said.next() == str(epoch)
            assert wrote.next() == f"wrote {page} ({epoch + 2} events, open)"
            html = page.read_text(encoding="utf-8")
            assert _points(html, "val_loss") == epoch + 1
            assert _points(html, "width") == epoch + 1
            assert 'http-equiv="refresh"' in html

        writer.stdin.write(b"finish\n")
        writer.stdin.flush()
        assert writer.wait(timeout=60) == 0, writer.stderr.read() if writer.stderr else ""
        assert wrote.next() == f"wrote {page} (5 events, sealed)"
        assert watch.wait(timeout=60) == 0
        html = page.read_text(encoding="utf-8")
        # The last page is an ordinary report: no refresh, no live banner, the run sealed.
        assert 'http-equiv="refresh"' not in html and "class=live" not in html
        cards = {k: v for k, v in re.findall(r"<span>([^<]+)</span><b title='([^']*)'", html)}
        assert cards["status"] == "completed" and cards["epochs"] == "3"
        assert _points(html, "val_loss") == 3
        assert marks(html).having("path", "metric")
        # Rewritten by rename each time: no partial file is left beside it.
        assert [p.name for p in page.parent.iterdir()] == ["live.html"]
    finally:
        for proc in (writer, watch):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


def test_watching_a_sealed_run_writes_the_page_once_and_ends(
    sqlite_url: str, tmp_path: Path
) -> None:
    from kasmina import Ledger

    with Ledger.open(sqlite_url) as ledger:
        ledger.start_run("done", seed=1, run_id="done").finish()
    page = tmp_path / "done.html"
    env = {k: v for k, v in os.environ.items() if k != "KASMINA_DB"}
    proc = subprocess.run(
        [BIN, "--db", sqlite_url, "report", "done", "--watch", "-o", str(page)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [f"wrote {page} (2 events, sealed)"]
    assert 'http-equiv="refresh"' not in page.read_text(encoding="utf-8")
