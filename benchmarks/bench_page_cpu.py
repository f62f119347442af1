"""What an open page of the tab costs while nobody touches it: CPU of the browser and of the server.

Opens, in headless Chromium (Debian's, software GL as on a machine without a GPU), one after the other:
- **ours**: `python -m lora_trainer ui` with one project, on its Dataset tab;
- **editor page**: a gradio page holding only a `gr.ImageEditor` as the Dataset panel built it before
  the editor was made on demand (gradio redraws its WebGL canvas every frame, hidden or not);
- **empty page**: a gradio page with a textbox (the floor).

Each page is left idle for `--seconds`, after a settling time; CPU seconds are read from /proc for all of
Chromium's processes and for the server's. Prints % of one core and ours/editor-page as a ratio.

    .venv/bin/python benchmarks/bench_page_cpu.py [--seconds 15] [--chromium /usr/bin/chromium]

Linux only (/proc). Nothing asserts; CI does not run it.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PAGES = {
    "editor page": """
import gradio as gr, sys
with gr.Blocks() as demo:
    gr.Textbox("one page")
    gr.ImageEditor(type="pil", image_mode="RGBA", sources=(), transforms=(), layers=False, height=560)
demo.launch(server_port=int(sys.argv[1]))
""",
    "empty page": """
import gradio as gr, sys
with gr.Blocks() as demo:
    gr.Textbox("one page")
demo.launch(server_port=int(sys.argv[1]))
""",
}
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / os.sysconf("SC_CLK_TCK")


def pids_of(word: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if word in Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry))
            except OSError:
                continue
    return found


def wait_serving(url: str, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"{url} did not answer in {timeout:.0f} s")


def measure(command: list[str], port: int, tab: str | None, args) -> tuple[float, float]:
    """(% of a core for Chromium, % for the server) over args.seconds of an idle page."""
    from playwright.sync_api import sync_playwright

    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_serving(url)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            context = browser.new_context(viewport={"width": 1280, "height": 1600})
            if args.offline:  # as the tests do: no web fonts or CDN (gradio then may not start the editor)
                context.route(lambda u: not u.startswith("http://127.0.0.1"), lambda route: route.abort())
            page = context.new_page()
            page.goto(url)
            if tab:
                page.get_by_role("tab", name=tab).click()
            time.sleep(args.settle)
            chromium = pids_of("chromium")  # every Chromium process: run nothing else with one meanwhile
            before = cpu_seconds(chromium), cpu_seconds([server.pid])
            time.sleep(args.seconds)
            after = cpu_seconds(chromium), cpu_seconds([server.pid])
            browser.close()
        return tuple(round((a - b) / args.seconds * 100, 1) for a, b in zip(after, before))
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--settle", type=float, default=8.0, help="seconds after the page opened")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--offline", action="store_true", help="abort requests that leave the machine")
    args = parser.parse_args()

    from PIL import Image

    results = {}
    with tempfile.TemporaryDirectory() as work:
        workspace = Path(work) / "ws"
        images = workspace / "hero" / "img" / "1_hero"
        images.mkdir(parents=True)
        Image.new("RGB", (64, 64), "red").save(images / "000.png")
        port = free_port()
        results["ours"] = measure([sys.executable, "-m", "lora_trainer", "ui", "--dir", str(workspace),
                                   "--port", str(port)], port, "Dataset", args)
        for name, source in PAGES.items():
            script = Path(work) / f"{name.replace(' ', '_')}.py"
            script.write_text(source)
            port = free_port()
            results[name] = measure([sys.executable, str(script), str(port)], port, None, args)

    print(f"{'page':<14}{'Chromium % CPU':>16}{'server % CPU':>14}   (idle {args.seconds:g} s, % of one core)")
    for name, (browser, server) in results.items():
        print(f"{name:<14}{browser:>16}{server:>14}")
    editor = results["editor page"][0]
    if editor:
        print(f"ours / editor page (Chromium): {results['ours'][0] / editor:.2f}x")


if __name__ == "__main__":
    main()
