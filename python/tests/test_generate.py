"""generate / generate_many against `alens generate --json`."""

import json

import pytest

from conftest import MINI, run_cli

ALPHAS = [-1.5, 0.0, 1.5]


def cli_generate(record, alphas=None):
    args = ["generate", "--model", MINI, "--question", record["question"], "--answer", record["answer"], "--json"]
    if alphas is not None:
        args.append("--alphas=" + ",".join(str(a) for a in alphas))
    last = json.loads(run_cli(*args).splitlines()[-1])
    return last if isinstance(last, list) else [last]


def test_generate_equals_cli_unsteered(mini, test_records):
    for record in test_records[:6]:
        (expected,) = cli_generate(record)
        assert mini.generate(record["question"], record["answer"]) == expected["output"]
        (row,) = mini.generate_many([record])
        assert (row["output"], row["token_ids"]) == (expected["output"], expected["token_ids"])


def test_generate_many_equals_cli_steered(mini, test_records):
    records = test_records[:4]
    rows = mini.generate_many(records, alphas=ALPHAS, batch_size=1)
    assert len(rows) == len(records) * len(ALPHAS)
    for i, record in enumerate(records):
        expected = cli_generate(record, ALPHAS)
        got = rows[i * len(ALPHAS):(i + 1) * len(ALPHAS)]
        assert [(r["output"], r["token_ids"]) for r in got] == [(e["output"], e["token_ids"]) for e in expected]
        assert [r["alpha"] for r in got] == ALPHAS
        for r in got:
            assert set(r) >= {"output", "token_ids", "copied", "correction_magnitude", "alpha", "finish_reason", "model"}


def test_generate_batched_equals_alone(mini, test_records):
    records = test_records[:10]
    alone = mini.generate_many(records, alphas=[1.0], batch_size=1)
    batched = mini.generate_many(records, alphas=[1.0], batch_size=8)
    assert [r["token_ids"] for r in batched] == [r["token_ids"] for r in alone]


def test_generate_alpha_changes_output(mini, test_records):
    record = test_records[1]
    outs = {mini.generate(record["question"], record["answer"], alpha=a, max_new_tokens=24) for a in (-6.0, 0.0, 6.0)}
    assert len(outs) > 1
