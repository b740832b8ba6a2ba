"""The demo driver end to end in its --quick form (tiny data, 3 steps a run): groups, variants and the files."""
from __future__ import annotations

import json

from epalm.demo.runner import format_table, main


def test_quick_demo_writes_every_group_variant(tmp_path):
    rows = main(["--quick", "--groups", "main", "connectors", "bridges", "pairs", "--tasks", "image_vqa", "image_pairs",
                 "--jobs", "2", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved == rows
    main_rows = [row for row in rows if "group" not in row]
    assert main_rows and set(main_rows[0]) == {"task", "metric", "blind", "epalm"}  # the README table's rows
    connectors = [row for row in rows if row.get("group") == "connectors"]
    assert {"blind", "epalm", "prefix"} <= set(connectors[0]) and connectors[0]["task"] == "image_vqa"
    bridges = [row for row in rows if row.get("group") == "bridges"]
    assert {"blind", "epalm", "llava", "mean_prefix"} <= set(bridges[0]) and bridges[0]["task"] == "image_vqa"
    pairs = [row for row in rows if row.get("group") == "pairs"]
    assert [row["metric"] for row in pairs] == ["accuracy", "accuracy/colour_then_shape", "accuracy/shape_then_colour"]
    assert all({"blind", "first_only", "both"} <= set(row) for row in pairs)
    summary = (tmp_path / "summary.md").read_text()
    assert summary.count("| task | metric |") == 4
    assert (tmp_path / "index.html").is_file() and (tmp_path / "image_pairs" / "both" / "eval" / "test.html").is_file()
    # runs side by side in worker processes (the default on 2 cores) or one after the other here: the same numbers
    alone = main(["--quick", "--groups", "main", "--tasks", "image_vqa", "--jobs", "1", "--out", str(tmp_path / "one")])
    assert alone == main_rows


def test_table_gains_are_against_blind():
    rows = [{"task": "t", "metric": "accuracy", "blind": 40.0, "epalm": 91.5, "prefix": 88.0}]
    table = format_table(rows, ["blind", "epalm", "prefix"]).splitlines()
    assert table[0] == "| task | metric | blind | eP-ALM | prefix | eP-ALM gain | prefix gain |"
    assert table[2] == "| t | accuracy | 40.0 | 91.5 | 88.0 | +51.5 | +48.0 |"
    assert format_table(rows).splitlines()[0] == "| task | metric | blind | eP-ALM | gain |"
