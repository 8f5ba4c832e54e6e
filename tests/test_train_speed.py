"""The speed work: the shuffle, the dense layer's gradient, and the training benchmark end to end (tiny)."""

import json
import re
import subprocess
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from benchmarks import train_e2e
from benchmarks import train_throughput as B
from mlp_jax import data as D
from mlp_jax import model as M
from mlp_jax import train as T
from tests.helpers import ROOT, tiny_config


@pytest.mark.parametrize("n", [1, 2, 3, 255, 256, 1000, 70_001])
def test_shuffle_indices_is_a_permutation(n):
    p = np.asarray(T.shuffle_indices(jax.random.key(7), n))
    assert p.dtype == np.int32
    np.testing.assert_array_equal(np.sort(p), np.arange(n))


def test_shuffle_indices_is_a_pure_function_of_the_key_and_looks_uniform():
    a, b, c = (
        np.asarray(T.shuffle_indices(k, 5000)) for k in (jax.random.key(1), jax.random.key(1), jax.random.key(2))
    )
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert abs(np.corrcoef(a, np.arange(5000))[0, 1]) < 0.05  # not the identity, nor a shifted one
    assert abs(np.corrcoef(a, c)[0, 1]) < 0.05  # keys give unrelated orders
    # where each of 8 items lands over 4000 keys: every (item, position) pair about 500 times
    perms = np.asarray(jax.jit(jax.vmap(lambda k: T.shuffle_indices(k, 8)))(jax.random.split(jax.random.key(0), 4000)))
    counts = np.zeros((8, 8))
    np.add.at(counts, (perms, np.arange(8)[None, :]), 1)
    assert counts.min() > 400 and counts.max() < 600, counts


def test_shuffle_indices_refuses_rows_beyond_int32():
    with pytest.raises(ValueError, match="do not fit int32"):
        T.shuffle_indices(jax.random.key(0), 2**31)


def _reference_logits(graphdef, params, x):
    """The MLP through nnx.Linear's own __call__ (plain autodiff, no custom gradient)."""
    mlp = nnx.merge(graphdef, params)
    for layer in mlp.hidden:
        x = jax.nn.relu(layer(x))
    return mlp.head(x)


@pytest.mark.parametrize("hidden", [(32, 16), (4, 48)])  # the narrower operand is x, then g, then x
def test_dense_matches_nnx_linear_forward_bitwise_and_its_gradient(hidden):
    graphdef, params = nnx.split(M.create(6, 3, hidden, "relu", 0.0, seed=0))
    x = jax.random.normal(jax.random.key(1), (64, 6))
    y = jax.random.randint(jax.random.key(2), (64,), 0, 3)

    def loss(f):
        return lambda p: optax.softmax_cross_entropy_with_integer_labels(f(graphdef, p, x), y).mean()

    np.testing.assert_array_equal(
        jax.jit(M.apply, static_argnums=0)(graphdef, params, x),
        jax.jit(_reference_logits, static_argnums=0)(graphdef, params, x),
    )
    ours = jax.jit(jax.grad(loss(M.apply)))(params)
    ref = jax.jit(jax.grad(loss(_reference_logits)))(params)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_kernel_gradients_use_no_transposed_left_matmul_on_cpu():
    """The reason for model.dense: XLA:CPU runs a dot contracting the left operand's dim 0 in slow Eigen."""
    graphdef, params = nnx.split(M.create(20, 2, (128, 64), "relu", 0.0, seed=0))
    x, y = jnp.ones((256, 20)), jnp.zeros(256, jnp.int32)

    def loss(p):
        return optax.softmax_cross_entropy_with_integer_labels(M.apply(graphdef, p, x), y).mean()

    hlo = jax.jit(jax.grad(loss)).lower(params).compile().as_text()
    dots = re.findall(r"= f32\[[\d,]+\]\{[\d,]+\} dot\([^\n]*", hlo)
    assert len(dots) >= 5, dots  # 3 forward + 3 kernel gradients + 2 input gradients, some inside fusions
    assert not [d for d in dots if "lhs_contracting_dims={0}" in d], dots


def test_dense_gradient_handles_rank_3_inputs():
    graphdef, params = nnx.split(M.create(5, 2, (7,), "relu", 0.0, seed=0))
    x = jax.random.normal(jax.random.key(0), (3, 4, 5))
    g1 = jax.grad(lambda p: M.apply(graphdef, p, x).sum())(params)
    g2 = jax.grad(lambda p: _reference_logits(graphdef, p, x).sum())(params)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_benchmark_head_to_head_and_scaling_on_a_tiny_task(tmp_path, tiny_csv):
    cfg = tiny_config(tmp_path, tiny_csv)
    ds = D.prepare(cfg.data, cfg.seed)
    matmul = B.matmul_flops_per_second(sizes=(128,), repeats=1)
    assert matmul["flops"] > 0 and matmul["n"] == 128
    head = B.head_to_head(ds, epochs=2, matmul=matmul["flops"], batch_size=32, rounds=2)
    names = [r["name"] for r in head["rows"]]
    assert names[0].startswith("project") and names[1].startswith("per-step loop, flax-example")
    assert names[2].startswith("per-step loop, lean") and len(names) == 5
    for r in head["rows"]:
        assert r["samples_per_second"] > 0 and 0.5 < r["test_accuracy"] <= 1 and r["epochs"] == 2
        assert len(r["round_samples_per_second"]) == 2 and len(r["epoch_samples_per_second"]) == 4
        assert r["samples_per_second"] == pytest.approx(np.median(r["round_samples_per_second"]))
    assert head["ratio_vs_sklearn"] > 0 and head["ratio_vs_per_step_loop"] > 0 and head["ratio_vs_lean_loop"] > 0
    assert head["flops_per_sample"] == 6 * (6 * 128 + 128 * 64 + 64 * 2)
    point = B.scaling_point(ds, 32, (16, 16), 1, matmul["flops"])
    assert point["samples_per_second"] > 0 and point["hidden"] == [16, 16]
    results = {"machine": B.machine_info(), "matmul": {**matmul, "measured": [matmul["flops"]]}, "head": head}
    results["scaling"] = {"batch": [point]}
    B.rescale_fractions(results, 2 * matmul["flops"])
    assert point["matmul_fraction"] == pytest.approx(
        point["samples_per_second"] * point["flops_per_sample"] / (2 * matmul["flops"])
    )
    text = B.markdown(results)
    assert "| project (train.fit" in text and "### Scaling: batch size" in text


@pytest.mark.slow
def test_end_to_end_run_is_broken_down_from_the_summary_timings(tmp_path, tiny_csv):
    args = [
        f"data.path={tiny_csv}",
        "model.hidden_sizes=16,8",
        "train.epochs=1",
        "train.batch_size=32",
        "train.compare_sklearn=false",
        "tracking.enabled=false",
    ]
    row = train_e2e.run_baseline("tiny", tmp_path / "run", "off", args, tmp_path)
    assert row["epochs_run"] == 1 and row["wall_seconds"] > row["train_seconds"] > 0
    assert row["outside_runner_seconds"] > 0 and row["other_in_process_seconds"] > 0
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["timings"]["compile"] == row["compile_seconds"]
    assert "| tiny | 1 |" in train_e2e.markdown_table({"imports_seconds": 1.0, "quick": True, "runs": [row]})
    with pytest.raises(ValueError, match="unknown end-to-end run"):
        train_e2e.end_to_end(runs=["lukewarm"])


def test_benchmark_cli_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        B.main(["--only", "head,nope"])
    assert "unknown section(s) nope" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        B.main(["--e2e-runs", "tepid"])
    assert "--e2e-runs" in capsys.readouterr().err


def test_gpu_check_script_is_valid_bash():
    script = Path(ROOT) / "benchmarks" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True, timeout=30).returncode == 0
