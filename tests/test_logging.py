"""metrics.jsonl after a kill: a torn last line is dropped by the resume trim and skipped by every reader."""

import json

from mmssl.logging import drop_metrics_after, read_metrics
from mmssl.report import read_run

TORN = '{"step": 4, "loss": 0.'  # a writer killed mid-line


def _folder(tmp_path):
    lines = [json.dumps({"step": s, "loss": 1.0 / s}) for s in (1, 2, 3)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n" + TORN)
    (tmp_path / "config.yaml").write_text("trainer:\n  lr: 0.1\n")
    return tmp_path


def test_resume_trim_drops_later_records_and_the_torn_line(tmp_path):
    drop_metrics_after(_folder(tmp_path), 2)
    assert (tmp_path / "metrics.jsonl").read_text().splitlines() == [json.dumps({"step": 1, "loss": 1.0}),
                                                                       json.dumps({"step": 2, "loss": 0.5})]


def test_readers_keep_every_complete_record(tmp_path):
    folder = _folder(tmp_path)
    assert [r["step"] for r in read_metrics(folder)] == [1, 2, 3]
    run = read_run(folder)
    assert [r["step"] for r in run.history] == [1, 2, 3] and run.config["trainer.lr"] == 0.1
