"""Open a student notebook in JupyterLab in headless Chromium and run it as a learner would.

    python scripts/browser_test.py [--assignment problem3] [--out DIR]

Steps: copy the released student notebook into a temporary folder with the reference solution in
the student's cell (the "correct" sample submission); start JupyterLab there on a free localhost
port without a token; open the notebook in Debian's Chromium (/usr/bin/chromium, driven by the
`playwright` Python package, which never downloads a browser of its own here); choose
Run > Run All Cells from the menu; wait for the last cell; then read the page: every check cell's
verdict ("All N cases passed."), no failed case and no traceback, and the teaching plots rendered
as images. It saves screenshots under --out (the self-check verdict, and the tiling plot).

Exit status 0 when every assertion holds. tests/test_browser.py runs the same function.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# The closing line of every check: "All 3 cases passed.", "All 1 schedules in the right order.", ...
VERDICT = re.compile(r"^All \d+ \w+", re.M)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def filled_in_notebook(assignment: str, folder: Path) -> tuple[Path, int]:
    """Write the student notebook with the reference solution filled in; return its path and the
    number of cells in it that print a verdict (the self-check and the visible graded cells)."""
    import nbformat

    sys.path.insert(0, str(REPO_ROOT))
    from autograder import problems
    from autograder.grading.samples import SAMPLES, build_submission
    from autograder.notebook_code import read

    spec = problems.get_spec(assignment)
    source = read(REPO_ROOT / "solutions" / assignment / spec.notebook)
    release = read(REPO_ROOT / "notebooks" / assignment / spec.notebook)
    correct = next(s for s in SAMPLES[assignment] if s.name == "correct")
    nb = build_submission(correct, source, release, spec.student_cell, spec.kernel_cells[-1])
    verdicts = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        calls = [line for line in cell.source.splitlines()
                 if line.strip() and not line.lstrip().startswith(("#", "from ", "import "))]
        graded = cell.metadata.get("nbgrader", {}).get("grade", False)
        self_check = f"autograder.problems.{assignment}" in cell.source and re.search(r"\bcheck\(", cell.source)
        verdicts += bool(calls) and bool(graded or self_check)
    path = folder / spec.notebook
    nbformat.write(nb, str(path))
    return path, verdicts


def start_jupyterlab(folder: Path, port: int, log_path: Path) -> subprocess.Popen:
    env = dict(os.environ)
    # A private Jupyter home: no user settings, workspaces or extra kernels leak into the run;
    # the "python3" kernel comes from this environment (sys.prefix/share/jupyter).
    home = folder.parent / "jupyter"
    for var, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_DATA_DIR", "data"),
                     ("JUPYTER_RUNTIME_DIR", "runtime"), ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"),
                     ("JUPYTERLAB_SETTINGS_DIR", "settings")):
        env[var] = str(home / sub)
    # No news or update toasts: nothing reaches out of localhost, and nothing covers the page.
    notification = home / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True, exist_ok=True)
    notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", "--ServerApp.token=", "--ServerApp.password=",
           "--ServerApp.allow_root=True", f"--ServerApp.root_dir={folder}",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    log = open(log_path, "w")
    return subprocess.Popen(cmd, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_for_server(base: str, server: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with status {server.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"{base}/api/status", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"JupyterLab did not answer at {base} within {timeout_s:.0f} s")


def stop(server: subprocess.Popen) -> None:
    """Stop JupyterLab and the kernels it started (its own process group, and nothing else)."""
    if server.poll() is None:
        os.killpg(server.pid, 15)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
            server.wait()


def wait_for_kernel(page, base: str, timeout_s: float) -> None:
    """Wait until the notebook's kernel is running and idle, answering JupyterLab's "Select Kernel"
    dialog as a person would (it appears now and then when the page opens before the server has
    listed its kernels); Run All before that runs nothing."""
    deadline = time.monotonic() + timeout_s
    accept = page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-accept")
    while time.monotonic() < deadline:
        if accept.count():
            accept.first.click()
        with urllib.request.urlopen(f"{base}/api/sessions", timeout=5) as reply:
            sessions = json.load(reply)
        states = [s.get("kernel", {}).get("execution_state") for s in sessions]
        indicator = page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").count()
        if "idle" in states and indicator and not accept.count():
            return
        page.wait_for_timeout(300)
    raise TimeoutError(f"the notebook's kernel was not idle within {timeout_s:.0f} s")


def drive_browser(url: str, expected_verdicts: int, out: Path, run_timeout_s: float) -> dict:
    from playwright.sync_api import sync_playwright

    timings = {}
    with sync_playwright() as pw:
        # Debian's Chromium, never a browser downloaded by playwright.
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1360, "height": 1100})
        try:
            start = time.monotonic()
            page.goto(url)
            page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=120_000)
            wait_for_kernel(page, url.split("/lab/")[0], timeout_s=120)
            timings["open_s"] = time.monotonic() - start
            page.keyboard.press("Control+b")  # fold the file browser away: more notebook per screenshot

            start = time.monotonic()
            page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
            page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
            # Done when every code cell shows an execution count: none pending "[*]" or never run "[ ]".
            page.wait_for_function(
                """() => {
                    const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
                    return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
                }""", timeout=run_timeout_s * 1000, polling=500)
            timings["run_all_s"] = time.monotonic() - start

            outputs = page.locator(".jp-OutputArea-output").all_inner_texts()
            verdicts = [t for t in outputs if VERDICT.search(t)]
            failures = [t for t in outputs if re.search(r"^FAIL ", t, re.M) or "Traceback" in t]
            hints = [t for t in outputs if t.startswith("Hint 1 (step 1 of 3)")]
            images = page.evaluate("""() => [...document.querySelectorAll('.jp-RenderedImage img')]
                                        .map(img => [img.naturalWidth, img.naturalHeight])""")

            # Screenshots: the self-check's verdict, then the tiling picture.
            first_verdict = page.locator(".jp-OutputArea-output", has_text=VERDICT).first
            first_verdict.scroll_into_view_if_needed()
            page.evaluate("""() => {
                const out = [...document.querySelectorAll('.jp-OutputArea-output')]
                    .find(o => /^All \\d+ \\w+/m.test(o.innerText));
                out.closest('.jp-Cell').scrollIntoView({block: 'start'});
            }""")
            page.wait_for_timeout(300)
            page.screenshot(path=str(out / "self_check.png"))
            page.locator(".jp-RenderedImage img").nth(1).scroll_into_view_if_needed()
            page.wait_for_timeout(300)
            page.screenshot(path=str(out / "plot.png"))
        except Exception:
            page.screenshot(path=str(out / "failure.png"))  # what the page showed when it went wrong
            raise
        finally:
            browser.close()
    return {"verdicts": verdicts, "expected_verdicts": expected_verdicts, "failures": failures,
            "hints": hints, "images": images, **timings}


def run(assignment: str = "problem3", out: Path | None = None, run_timeout_s: float = 300) -> dict:
    """Everything above; returns what the page showed, and raises AssertionError when it is wrong."""
    if not Path(CHROMIUM).exists():
        raise FileNotFoundError(f"{CHROMIUM} is missing: apt-get install -y chromium")
    start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="course-browser-"))
    out = Path(out) if out else work / "out"
    out.mkdir(parents=True, exist_ok=True)
    folder = work / "course"
    folder.mkdir()
    notebook, expected = filled_in_notebook(assignment, folder)
    prepared_s = time.monotonic() - start
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_jupyterlab(folder, port, out / "jupyterlab.log")
    try:
        wait_for_server(base, server, timeout_s=120)
        server_s = time.monotonic() - start - prepared_s
        result = drive_browser(f"{base}/lab/tree/{notebook.name}?reset", expected, out, run_timeout_s)
    finally:
        stop(server)
    result.update(prepare_s=prepared_s, server_start_s=server_s, total_s=time.monotonic() - start)
    result["screenshots"] = [str(out / "self_check.png"), str(out / "plot.png")]
    (out / "result.json").write_text(json.dumps(result, indent=1))
    assert not result["failures"], f"the page shows failures: {result['failures']}"
    assert len(result["verdicts"]) == expected, \
        f"expected {expected} passing verdicts on the page, saw {len(result['verdicts'])}: {result['verdicts']}"
    assert len(result["hints"]) == 1, "the hint cell did not show its first step"
    assert len(result["images"]) >= 1 and all(w > 0 and h > 0 for w, h in result["images"]), \
        f"plots not rendered: {result['images']}"
    shutil.rmtree(folder, ignore_errors=True)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assignment", default="problem3")
    parser.add_argument("--out", default=str(REPO_ROOT / "build" / "browser-test"))
    args = parser.parse_args(argv)
    result = run(args.assignment, Path(args.out))
    print(f"{len(result['verdicts'])} verdicts on the page, {len(result['images'])} plots rendered; "
          f"notebook prepared in {result['prepare_s']:.1f} s, JupyterLab up in {result['server_start_s']:.1f} s, "
          f"page open in {result['open_s']:.1f} s, Run All in {result['run_all_s']:.1f} s, "
          f"{result['total_s']:.1f} s in all")
    print("screenshots: " + ", ".join(result["screenshots"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
