"""bench/det_plot.py draws a DET plot from eval-pairs dumps: checked on a
tiny synthetic dump (two labelled curves, operating points marked)."""
import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "det_plot.py"


def write_dump(path, same, diff):
    rows = ["fold,same,distance,failed,fallback,path_a,path_b"]
    rows += [f"-1,1,{d},0,0,a{i}.jpg,b{i}.jpg" for i, d in enumerate(same)]
    rows += [f"-1,0,{d},0,0,c{i}.jpg,d{i}.jpg" for i, d in enumerate(diff)]
    rows.append("-1,0,,1,0,x.jpg,y.jpg")  # a failed pair is left out
    path.write_text("\n".join(rows) + "\n")


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, timeout=120)


def test_det_plot_writes_a_png(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    write_dump(a, [0.3 + 0.01 * i for i in range(40)], [0.5 + 0.005 * i for i in range(200)])
    write_dump(b, [0.35 + 0.01 * i for i in range(40)], [0.55 + 0.005 * i for i in range(200)])
    ops = tmp_path / "a.json"
    ops.write_text(json.dumps({"operating_points": [
        {"fmr": 0.01, "fmr_measured": 0.01, "fnmr": 0.1},
        {"fmr": 0.001, "fmr_measured": 0.0, "fnmr": 0.3}]}))
    p = run("--name", "tiny", "--out-dir", tmp_path / "out", "--ops", f"plain={ops}",
            f"plain={a}", f"flip={b}")
    assert p.returncode == 0, p.stderr
    out = tmp_path / "out" / "tiny_det.png"
    assert p.stdout.strip() == str(out)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (720, 540)


def test_det_plot_refuses_bad_input(tmp_path):
    only_same = tmp_path / "s.csv"
    write_dump(only_same, [0.3, 0.4], [])
    p = run("--name", "x", "--out-dir", tmp_path, f"s={only_same}")
    assert p.returncode != 0 and "both same and different" in p.stderr
    p = run("--name", "x", "--out-dir", tmp_path, str(only_same))
    assert p.returncode != 0 and "label=path" in p.stderr
    p = run("--name", "x", "--out-dir", tmp_path, "--ops", f"other={only_same}", f"s={only_same}")
    assert p.returncode != 0
