"""Open a report in real headless Chromium and check that its images decode and its tables show.

A copy of the page gets a small script that, on load, writes what the browser sees (image
natural sizes, table rows, any resource it tried to fetch) into the DOM; `--dump-dom` hands
that back. A screenshot of the untouched page must not be blank.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from tests.support.tools import missing_tool

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

_PROBE = """
<script>
window.addEventListener('load', () => {
  const images = [...document.images].map(i => ({w: i.naturalWidth, h: i.naturalHeight, done: i.complete}));
  const tables = {};
  for (const t of document.querySelectorAll('table[id]')) tables[t.id] = t.tBodies[0].rows.length;
  const fetched = performance.getEntriesByType('resource').map(e => e.name);
  const out = document.createElement('pre');
  out.id = 'probe-result';
  out.textContent = JSON.stringify({images, tables, fetched, title: document.title});
  document.body.appendChild(out);
});
</script>
"""


def chromium_binary() -> str | None:
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",  # CI containers run as root
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=5000",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_renders_in_chromium(
    html: Path, *, images: int, tables: list[str], tmp_path: Path
) -> dict:
    binary = chromium_binary()
    if binary is None:
        missing_tool("no chromium on PATH (apt-get install chromium) to render the report in")
    probe_page = tmp_path / "probe.html"
    probe_page.write_text(html.read_text().replace("</body>", _PROBE + "</body>"))
    done = _chromium(binary, tmp_path / "profile", "--dump-dom", probe_page.as_uri())
    match = re.search(r'<pre id="probe-result">(.*?)</pre>', done.stdout, re.S)
    assert match, f"chromium gave no probe result (exit {done.returncode}): {done.stderr[-1500:]}"
    seen = json.loads(
        match.group(1)
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", '"')
    )
    assert len(seen["images"]) == images, seen
    assert all(i["done"] and i["w"] > 100 and i["h"] > 100 for i in seen["images"]), seen["images"]
    for table in tables:
        assert seen["tables"].get(table, 0) >= 1, (
            f"table {table} empty or missing: {seen['tables']}"
        )
    external = [u for u in seen["fetched"] if not u.startswith(("data:", "file:"))]
    assert not external, f"the report fetched external resources: {external}"

    shot = tmp_path / "report.png"
    _chromium(
        binary,
        tmp_path / "profile",
        f"--screenshot={shot}",
        "--window-size=1100,1600",
        html.as_uri(),
    )
    assert shot.is_file(), "chromium wrote no screenshot"
    from PIL import Image

    pixels = Image.open(shot).convert("L")
    dark = sum(pixels.histogram()[:200])
    assert dark > 0.01 * pixels.width * pixels.height, "the screenshot is (almost) blank"
    return seen
