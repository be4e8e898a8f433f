"""The README's commands run as written, so the documentation cannot drift.

Every fenced shell block in README.md that follows a `<!-- readme-test -->`
line is run line by line, from a directory laid out like a checkout next
to the test data: `build` links to $FACEVERIFY_BUILD and `../shared/data`
to $FACEVERIFY_DATA, so the paths in the README resolve unchanged.
`VAR=value` lines set variables for the lines after them; every other
line runs under bash and must exit 0.  A line whose output is JSON (on
stdout, or in the file it redirects to) must parse, must not be an error
object, and when its comment says `# keys: a, b, c` must have exactly
those top-level keys.  curl lines run against a live faceverifyd on a
fresh SQLite database (tests/py/fvserver.py) with a collection made by
`faceverifyd createcollection`; only the port (`localhost:8000`) and the
key placeholder (`KEY=fvk_...`) are substituted.

The endpoint table is held against openapi.json both ways: every path and
method the API describes has a row, and every row is described.
"""
import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from conftest import BUILD, DATA, MODELS, REPO, need
import fvserver

README = REPO / "README.md"
MARK = "<!-- readme-test -->"


def marked_blocks(text):
    """The fenced sh blocks that follow the marker, as lists of lines."""
    blocks = re.findall(re.escape(MARK) + r"\s*\n```sh\n(.*?)\n```", text, re.S)
    assert len(blocks) == text.count(MARK), "a readme-test marker not followed by ```sh"
    return [b.splitlines() for b in blocks]


def split_comment(line):
    """(command, comment) of a shell line: the comment starts at the first
    '#' outside quotes that follows a space."""
    quote = None
    for i, c in enumerate(line):
        if quote:
            quote = None if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i].strip(), line[i + 1:].strip()
    return line.strip(), ""


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """A directory where the README's relative paths resolve: repo/build and
    shared/data, as in a checkout beside the shared data."""
    need(DATA / "samples")
    if not (BUILD / "bin" / "faceverify").exists():
        pytest.fail(f"{BUILD}/bin/faceverify not built")
    root = tmp_path_factory.mktemp("readme")
    (root / "repo").mkdir()
    (root / "repo" / "build").symlink_to(BUILD.resolve())
    (root / "shared").mkdir()
    (root / "shared" / "data").symlink_to(DATA.resolve())
    return root / "repo"


def run_block(lines, cwd, env, subst=lambda s: s):
    """Runs one README block line by line; returns what each line printed."""
    outputs = []
    for raw in lines:
        cmd, comment = split_comment(raw)
        if not cmd:
            continue
        cmd = subst(cmd)
        m = re.fullmatch(r"([A-Z_][A-Z0-9_]*)=(\S+)", cmd)
        if m:
            env[m.group(1)] = m.group(2)
            continue
        p = subprocess.run(["bash", "-c", cmd], cwd=cwd, env=env, capture_output=True,
                           text=True, timeout=600)
        assert p.returncode == 0, (raw, p.returncode, p.stdout[-2000:], p.stderr[-2000:])
        redirect = re.search(r">\s*(\S+)\s*$", cmd)
        out = (Path(cwd) / redirect.group(1)).read_text() if redirect else p.stdout
        if out.lstrip().startswith("{"):
            j = json.loads(out)
            assert "error" not in j, (raw, j)
            keys = re.match(r"keys:\s*(.*)", comment)
            if keys:
                want = {k.strip() for k in keys.group(1).split(",")}
                assert set(j) == want, (raw, sorted(j), sorted(want))
        else:
            assert not comment.startswith("keys:"), (raw, "documents keys, printed no JSON")
        outputs.append((raw, out))
    return outputs


def base_env():
    env = dict(os.environ, FACEVERIFY_MODELS=str(MODELS))
    env["PATH"] = f"{BUILD / 'bin'}:{env.get('PATH', '')}"
    return env


def test_readme_marks_the_cli_and_curl_examples():
    blocks = marked_blocks(README.read_text())
    joined = ["\n".join(b) for b in blocks]
    assert any("build/bin/faceverify verify" in b for b in joined)
    assert any("curl " in b for b in joined)


def test_cli_examples_run_as_written(checkout):
    blocks = [b for b in marked_blocks(README.read_text()) if "faceverify " in "\n".join(b)
              and "curl " not in "\n".join(b)]
    assert blocks
    for lines in blocks:
        outs = run_block(lines, checkout, base_env())
        assert outs
    # the verify example is the same person: the documented exit 0 held, and
    # its JSON twin agrees
    verify = [o for raw, o in outs if "verify" in raw and "--json" in raw]
    assert verify and json.loads(verify[0])["verified"] is True


def test_curl_examples_run_as_written(checkout, tmp_path):
    url = fvserver.new_db_url("sqlite", tmp_path)
    fvserver.daemon_cmd("migrate", db_url=url)
    key = fvserver.create_collection(url, "default")
    srv = fvserver.Server(url)
    try:
        def subst(cmd):
            cmd = cmd.replace("localhost:8000", f"127.0.0.1:{srv.port}")
            return f"KEY={key}" if cmd == "KEY=fvk_..." else cmd

        blocks = [b for b in marked_blocks(README.read_text()) if "curl " in "\n".join(b)]
        assert blocks
        for lines in blocks:
            assert any(line.startswith("KEY=fvk_...") for line in lines)
            outs = run_block(lines, checkout, base_env(), subst)
            curls = [(raw, o) for raw, o in outs if raw.startswith("curl ")]
            assert curls and all(json.loads(o) for _, o in curls)
        by_path = {re.search(r"/api/v1/[\w/?=]+", raw).group(0): json.loads(o)
                   for raw, o in curls}
        assert by_path["/api/v1/verify"]["verified"] is True
        ident = by_path["/api/v1/identify"]
        assert ident["faces"][0]["match"]["name"] == "clapton"
    finally:
        srv.stop()


def endpoint_rows(text):
    """(method, path) pairs of the README's endpoint table, whose first
    column reads `METHOD /path` or `METHOD/METHOD /path`, then notes."""
    table = text[text.index("| endpoint | what |"):]
    table = table[:table.index("\n\n")]
    rows = set()
    for line in table.splitlines()[2:]:
        m = re.match(r"\| `([A-Z/]+) (/api/[^`\s]+|/metrics)`", line)
        assert m, line
        for method in m.group(1).split("/"):
            rows.add((method.lower(), m.group(2)))
    return rows


def test_endpoint_table_matches_openapi():
    spec = json.loads((REPO / "src" / "server" / "openapi.json").read_text())
    # The table lists the JSON API; the pages (tag "pages": the demo page,
    # its static files, the docs page and the spec itself) are described in
    # the prose around it.
    described = {(method, path) for path, ops in spec["paths"].items() for method, op in ops.items()
                 if method in ("get", "post", "put", "patch", "delete")
                 and "pages" not in op.get("tags", [])}
    rows = endpoint_rows(README.read_text())
    assert described - rows == set(), "routes missing from the README's endpoint table"
    assert rows - described == set(), "README rows openapi.json does not describe"
