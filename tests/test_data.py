from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlp_jax import config as C
from mlp_jax import data as D
from tests.helpers import write_tiny_csv


def _frame(n=60, seed=0):
    rng = np.random.default_rng(seed)
    f = pd.DataFrame(rng.normal(size=(n, 3)), columns=["a", "b", "c"])
    f["label"] = np.where(f["a"] > 0, "yes", "no")
    return f


def test_synthetic_is_deterministic_and_has_target():
    cfg = C.DataConfig(n_samples=200)
    a, b = D.make_synthetic(cfg), D.make_synthetic(cfg)
    pd.testing.assert_frame_equal(a, b)
    assert list(a.columns) == [f"feature_{i}" for i in range(20)] + ["target"]
    assert set(a["target"]) == {0, 1}


def test_data_command_writes_csv(tmp_path):
    out = tmp_path / "d.csv"
    assert D.main(["--out", str(out), "data.n_samples=100", "data.n_classes=3"]) == 0
    frame = pd.read_csv(out)
    assert frame.shape == (100, 21) and set(frame["target"]) == {0, 1, 2}


def test_string_labels_kept_in_order_and_split_is_stratified(tmp_path):
    path = tmp_path / "s.csv"
    _frame(400).to_csv(path, index=False)
    ds = D.prepare(C.DataConfig(path=str(path), target="label"), seed=0)
    assert ds.classes == ("no", "yes")
    assert ds.feature_names == ("a", "b", "c")
    sizes = ds.split_sizes()
    assert sizes == {"train": 280, "val": 60, "test": 60}
    frac = [np.mean(y) for y in (ds.y_train, ds.y_val, ds.y_test)]
    assert max(frac) - min(frac) < 0.03  # stratified
    # robust scaling fitted on the training split only: train medians map to 0
    np.testing.assert_allclose(np.median(ds.x_train, axis=0), 0, atol=1e-5)
    assert abs(ds.x_test.mean()) > 1e-6
    standard = D.prepare(C.DataConfig(path=str(path), target="label", scaling="standard"), seed=0)
    np.testing.assert_allclose(standard.x_train.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(standard.x_train.std(axis=0), 1, atol=1e-4)


def test_split_is_seeded(tiny_csv):
    cfg = C.DataConfig(path=str(tiny_csv))
    a, b, c = D.prepare(cfg, 0), D.prepare(cfg, 0), D.prepare(cfg, 1)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.x_train, c.x_train)


@pytest.mark.parametrize(
    ("make", "target", "message"),
    [
        (lambda p: None, "label", "data file not found"),
        (lambda p: p.write_text(""), "label", "data file is empty"),
        (lambda p: p.write_text("a,b,label\n"), "label", "0 data rows"),
        (lambda p: _frame().to_csv(p, index=False), "nope", "target column 'nope' not found"),
        (lambda p: _frame().assign(b=[f"id{i}" for i in range(60)]).to_csv(p, index=False), "label", "data.drop=b"),
        (lambda p: _frame().assign(label="same").to_csv(p, index=False), "label", "has 1 class(es)"),
        (lambda p: _frame().assign(label=_frame()["a"]).to_csv(p, index=False), "label", "data.task=regression"),
        (lambda p: p.write_text("a,b,a,label\n1,2,3,x\n"), "label", "more than once: 'a'"),
        (lambda p: p.write_text("label,b,label\n1,2,3\n"), "label", "more than once: 'label'"),
        (lambda p: _frame()[["label"]].to_csv(p, index=False), "label", "no feature columns"),
        (lambda p: _frame(5).assign(label=list("aabbb")).to_csv(p, index=False), "label", "too few rows"),
    ],
)
def test_bad_csv_is_refused_with_a_named_problem(tmp_path, make, target, message):
    path = tmp_path / "bad.csv"
    make(path)
    with pytest.raises(D.DataError) as info:
        D.prepare(C.DataConfig(path=str(path), target=target), seed=0)
    assert message in str(info.value)


def test_missing_error_policy_refuses_gaps_like_before(tmp_path):
    path = tmp_path / "gaps.csv"
    _frame().assign(c=[np.nan] + [1.0] * 59).to_csv(path, index=False)
    with pytest.raises(D.DataError, match=r"missing values in feature column\(s\): c \(1 rows\)"):
        D.prepare(C.DataConfig(path=str(path), target="label", missing="error"), 0)
    ds = D.prepare(C.DataConfig(path=str(path), target="label"), 0)  # default: impute + indicator
    assert np.isfinite(ds.x_train).all() and np.isfinite(ds.x_test).all()


def test_rows_without_target_are_dropped_and_counted(tmp_path):
    path = tmp_path / "t.csv"
    _frame(100).assign(label=[None, "NA"] + ["a", "b"] * 49).to_csv(path, index=False)
    ds = D.prepare(C.DataConfig(path=str(path), target="label"), 0)
    assert ds.dropped_target_rows == 2 and sum(ds.split_sizes().values()) == 98


def test_bom_header_is_stripped(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeff".encode() + _frame().to_csv(index=False).encode())
    assert D.read_header(path)[0] == "a"
    assert D.read_header(path.read_bytes()) == ["a", "b", "c", "label"]
    assert list(D.read_table(path).columns) == ["a", "b", "c", "label"]
    assert D.prepare(C.DataConfig(path=str(path), target="label"), 0).feature_names == ("a", "b", "c")


def test_unnamed_pandas_index_column_is_dropped(tmp_path, capsys):
    path = tmp_path / "indexed.csv"
    _frame().to_csv(path)  # writes the index as an unnamed first column
    frame = D.read_table(path)
    assert list(frame.columns) == ["a", "b", "c", "label"]
    assert "written index" in frame.attrs["notes"][0]
    ds = D.prepare(C.DataConfig(path=str(path), target="label"), 0)
    assert ds.feature_names == ("a", "b", "c") and "written index" in capsys.readouterr().out


def test_empty_header_cell_is_named(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,,label\n1,5,x\n2,6,y\n")
    assert list(D.read_table(path).columns) == ["a", "unnamed_1", "label"]


def test_prediction_reader_passes_other_columns_through_verbatim(tmp_path):
    text = "id,note,a,b\n1,NA,1.5,x\n2,null,NA,\n3,N/A,,y\n4,NaN,2,z\n5,,3,NULL\n"
    path = tmp_path / "p.csv"
    path.write_text(text)
    for source in (path, text.encode()):
        frame = D.read_csv_for_prediction(source, ["a", "b"])
        assert frame["note"].tolist() == ["NA", "null", "N/A", "NaN", ""]
        assert frame["id"].tolist() == ["1", "2", "3", "4", "5"]
        assert frame["a"].tolist() == ["1.5", None, None, "2", "3"]
        assert frame["b"].tolist() == ["x", None, "y", "z", None]
    blocks = list(D.iter_csv_for_prediction(path, ["a"], block_bytes=16))
    assert sum(map(len, blocks)) == 5
    with pytest.raises(D.DataError, match=r"lacks feature column.*'zz'"):
        D.read_csv_for_prediction(path, ["a", "zz"])


def test_prediction_reader_feeds_the_preprocessor(tmp_path):
    path = tmp_path / "t.csv"
    _frame(200).assign(c=lambda f: f["c"].where(f.index % 9 > 0)).to_csv(path, index=False)
    ds = D.prepare(C.DataConfig(path=str(path), target="label"), 0)
    raw = D.read_csv_for_prediction(path, ds.feature_names)
    want = ds.preprocessor.transform(D.read_table(path)).x
    np.testing.assert_array_equal(ds.preprocessor.transform(raw).x, want)


@pytest.mark.parametrize(
    ("labels", "classes"),
    [
        (["True", "False"], (False, True)),
        (["007", "012"], ("007", "012")),
        (["1", "2"], (1, 2)),
        (["1.0", "2.0"], (1, 2)),
    ],
)
def test_labels_round_trip_exactly_through_files(tmp_path, labels, classes):
    frame = _frame(60).assign(label=labels * 30)
    for name, write in (("t.csv", lambda p: frame.to_csv(p, index=False)), ("t.parquet", frame.to_parquet)):
        write(tmp_path / name)
        ds = D.prepare(C.DataConfig(path=str(tmp_path / name), target="label"), 0)
        assert ds.classes == classes
        assert [type(c) for c in ds.classes] == [type(c) for c in classes]


def test_bool_typed_parquet_labels_stay_bool(tmp_path):
    path = tmp_path / "t.parquet"
    _frame(60).assign(label=[True, False] * 30).to_parquet(path)
    assert D.prepare(C.DataConfig(path=str(path), target="label"), 0).classes == (False, True)


def test_regression_single_and_multi_target(tmp_path):
    path = tmp_path / "r.csv"
    f = _frame(300).drop(columns=["label"])
    f["y1"] = 3 * f["a"] + 100
    f["y2"] = f["b"] - f["c"]
    f.loc[[3, 7], "y2"] = np.nan
    f.to_csv(path, index=False)
    one = D.prepare(C.DataConfig(path=str(path), target="y1", task="regression", drop=("y2",)), 0)
    assert one.y_train.shape == (len(one.y_train), 1) and one.y_train.dtype == np.float32
    assert one.classes == () and one.task == "regression" and one.feature_names == ("a", "b", "c")
    two = D.prepare(C.DataConfig(path=str(path), target="y1,y2", task="regression"), 0)
    assert two.target_names == ("y1", "y2") and two.y_train.shape[1] == 2 and two.dropped_target_rows == 2
    np.testing.assert_allclose(two.y_train.mean(axis=0), 0, atol=1e-5)
    back = two.target.decode(two.y_test)
    np.testing.assert_allclose(back[:, 0], two.test_frame["y1"], rtol=1e-5)
    assert sum(two.split_sizes().values()) == 298


def test_non_numeric_regression_target_refused(tmp_path):
    path = tmp_path / "r.csv"
    _frame(100).to_csv(path, index=False)
    with pytest.raises(D.DataError, match="regression target column 'label' is not numeric"):
        D.prepare(C.DataConfig(path=str(path), target="label", task="regression"), 0)


def test_standardizer_compat_view_only_for_all_numeric(tmp_path, tiny_csv):
    ds = D.prepare(C.DataConfig(path=str(tiny_csv)), 0)
    s = ds.standardizer
    assert s.mean.shape == (6,) and (s.scale > 0).all()
    path = tmp_path / "t.csv"
    _frame().assign(kind=["u", "v"] * 30).to_csv(path, index=False)
    with pytest.raises(D.DataError, match=r"use dataset.preprocessor"):
        _ = D.prepare(C.DataConfig(path=str(path), target="label"), 0).standardizer


def test_synthetic_generated_only_at_default_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = C.DataConfig(n_samples=50)
    assert D.ensure_synthetic(cfg) is True
    assert Path(C.SYNTHETIC_PATH).exists()
    assert D.ensure_synthetic(cfg) is False
    with pytest.raises(D.DataError, match=r"not found"):
        D.prepare(C.DataConfig(path="typo.csv"), 0)
    assert not Path("typo.csv").exists()


def test_float_integer_labels_become_ints(tmp_path):
    path = write_tiny_csv(tmp_path / "t.csv")
    frame = pd.read_csv(path)
    frame["target"] = frame["target"].astype(float)
    frame.to_csv(path, index=False)
    assert D.prepare(C.DataConfig(path=str(path)), 0).classes == (0, 1)


def test_from_frames_fits_on_train_only_and_keeps_the_rows():
    rng = np.random.default_rng(0)
    frames = []
    for n, shift, colours in ((80, 0.0, ["red", "blue"]), (20, 100.0, ["green"]), (15, 0.0, ["red", None])):
        f = pd.DataFrame({"a": rng.normal(shift, 1, n), "colour": rng.choice(colours, n)})
        f["y"] = f["a"] * 2 + 1
        frames.append(f)
    cfg = C.DataConfig(target="y", task="regression", min_category_count=1)
    ds = D.from_frames(*frames, cfg)
    assert ds.split_sizes() == {"train": 80, "val": 20, "test": 15}
    assert ds.target.mean[0] == pytest.approx(frames[0]["y"].mean())  # target statistics from train only
    assert ds.preprocessor.columns[0].name == "a"
    assert np.all(ds.x_val[:, 0] == cfg.clip)  # val's shifted values clip: scaled with train's statistics
    assert ds.digest == D.from_frames(*frames, cfg).digest != D.from_frames(frames[0], frames[2], frames[1], cfg).digest
    pd.testing.assert_frame_equal(ds.test_frame, frames[2])


def test_from_frames_classes_come_from_train():
    train, val = _frame(60, 0), _frame(20, 1)
    cfg = C.DataConfig(target="label")
    ds = D.from_frames(train, val, val, cfg)
    assert ds.classes == ("no", "yes") and ds.y_val.dtype == np.int32
    val.loc[val.index[0], "label"] = "maybe"
    with pytest.raises(D.DataError, match="maybe"):
        D.from_frames(train, val, val, cfg)
    with pytest.raises(D.DataError, match="without a target"):
        D.from_frames(train, val.assign(label=None), val, cfg)


@pytest.mark.parametrize(("sep", "word"), [(";", "semicolons"), ("\t", "tabs")])
def test_a_file_with_another_delimiter_is_named_as_such(tmp_path, sep, word):
    frame = pd.read_csv(write_tiny_csv(tmp_path / "t.csv"))
    path = tmp_path / "other.csv"
    frame.to_csv(path, sep=sep, index=False)
    with pytest.raises(D.DataError, match=rf"target column 'target' not found.*the file looks {word}-separated"):
        D.prepare(C.DataConfig(path=str(path)), 0, verbose=False)


def test_an_unclosed_quote_is_refused_not_swallowing_the_rows_after_it(tmp_path):
    text = 'a,b,color\n0.1,0.2,"red\n0.5,0.6,blue\n0.7,0.8,green\n'
    path = tmp_path / "q.csv"
    path.write_text(text)
    for read in (lambda s: D.read_table(s), lambda s: D.read_csv_for_prediction(s, ["a", "color"])):
        for source in (path, text.encode()):
            with pytest.raises(
                D.DataError, match=r"quote opened in data row 1 \(line 2\), column 'color' is never closed"
            ):
                read(source)
    # a multi-line value that is closed stays one value, at the end of the file or not
    ok = 'a,note\n1,"two\nlines"\n2,"three\nmore"\n'
    assert D.read_csv_for_prediction(ok.encode(), ["a"])["note"].tolist() == ["two\nlines", "three\nmore"]
    assert len(D.read_table(ok.encode())) == 2


def test_compressed_or_utf16_files_are_named(tmp_path):
    import bz2
    import gzip

    text = open(write_tiny_csv(tmp_path / "t.csv"), "rb").read()
    for name, blob, kind in (
        ("t.csv.gz", gzip.compress(text), "gzip-compressed"),
        ("t.csv.bz2", bz2.compress(text), "bzip2-compressed"),
        ("t16.csv", text.decode().encode("utf-16"), "UTF-16 text"),
    ):
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(D.DataError, match=kind):
            D.prepare(C.DataConfig(path=str(tmp_path / name)), 0, verbose=False)
        with pytest.raises(D.DataError, match=kind):
            D.read_csv_for_prediction(blob, ["feature_0"])
    # a header that merely starts with the letters of a magic number is a header
    (tmp_path / "bz.csv").write_text("BZhealth,target\n" + "\n".join(f"{i % 7},{i % 2}" for i in range(60)) + "\n")
    assert D.read_header(tmp_path / "bz.csv") == ["BZhealth", "target"]


def test_a_semicolon_csv_body_says_so():
    with pytest.raises(D.DataError, match=r"lacks feature column\(s\): 'a'.*looks semicolons-separated"):
        D.read_csv_for_prediction(b"a;b\n1;2\n", ["a"])


# ----------------------------------------------------------------------------- Parquet types and folders


def _parts(folder: Path, *frames: pd.DataFrame) -> Path:
    """Writes ``frames`` as a.parquet, b.parquet, ... in ``folder``."""
    folder.mkdir()
    for name, f in zip("abcdef", frames, strict=False):
        f.to_parquet(folder / f"{name}.parquet")
    return folder


@pytest.mark.parametrize(
    ("change_a", "change_b", "message"),
    [
        (lambda f: f, lambda f: f.assign(cat="u"), r"b.parquet has column\(s\) 'cat' that a.parquet lacks"),
        (lambda f: f.assign(cat="u"), lambda f: f, r"b.parquet lacks column\(s\) 'cat' that a.parquet has"),
        (lambda f: f, lambda f: f.assign(extra=1.0), r"b.parquet has column\(s\) 'extra' that a.parquet lacks"),
        (lambda f: f, lambda f: f.assign(b=f["b"].astype(str)), r"column 'b' is string in b.parquet but double in a"),
        (lambda f: f, lambda f: f.assign(b=[[1, 2]] * len(f)), r"column 'b' is list<element: int64> in b.parquet but"),
        (lambda f: f.assign(b=f["b"] > 0), lambda f: f, r"column 'b' is double in b.parquet but bool in a.parquet"),
    ],
    ids=["extra-column-later", "column-missing-later", "another-extra-column", "text", "list", "bool-vs-number"],
)
def test_a_parquet_folder_whose_files_disagree_is_refused_naming_the_file(tmp_path, change_a, change_b, message):
    frame = _frame(120)
    folder = _parts(tmp_path / "parts", change_a(frame.iloc[:60]), change_b(frame.iloc[60:]))
    for read in (
        lambda: D.prepare(C.DataConfig(path=str(folder), target="label"), 0, verbose=False),
        lambda: D.read_header(folder),
    ):
        with pytest.raises(D.DataError, match=message) as info:
            read()
        assert str(folder) in str(info.value) and "the files of a Parquet folder must have the same columns" in str(
            info.value
        )


def test_a_parquet_folder_reads_harmless_differences_as_one_type(tmp_path):
    frame = _frame(90).assign(n=np.arange(90), colour=["red", "blue", "green"] * 30)
    a = frame.iloc[:30].assign(colour=None)  # all missing in this file: pyarrow's null type
    b = frame.iloc[30:60].assign(n=lambda f: f["n"].astype(float) + 0.5)[frame.columns[::-1]]  # other order
    c = frame.iloc[60:].assign(colour=lambda f: f["colour"].astype("category"), n=lambda f: f["n"].astype("int32"))
    c.index = c.index[::-1]  # not a range: written as an index column, which is not data
    folder = _parts(tmp_path / "parts", a, b, c)
    got = D.read_table(folder)
    assert list(got.columns) == list(frame.columns)
    assert got["n"].dtype == np.float64 and got["n"].tolist() == [
        *range(30),
        *(np.arange(30, 60) + 0.5),
        *range(60, 90),
    ]
    assert got["colour"].iloc[:30].isna().all() and got["colour"].iloc[30:].tolist() == frame["colour"][30:].tolist()
    np.testing.assert_array_equal(got["a"], frame["a"])
    ds = D.prepare(C.DataConfig(path=str(folder), target="label"), 0, verbose=False)
    assert ds.feature_names == ("a", "b", "c", "n", "colour")


def test_a_partitioned_parquet_folder_reads_its_keys_as_text_columns(tmp_path):
    # DataFrame.to_parquet(partition_cols=...) keeps the keys in folder names (year=2020/...), not in the files
    frame = _frame(90).assign(year=[2019, 2020, 2021] * 30, site=["north", "south"] * 45)
    frame.to_parquet(tmp_path / "part", partition_cols=["year", "site"])
    got = D.read_table(tmp_path / "part")
    assert set(got.columns) == set(frame.columns) and len(got) == 90
    assert sorted(got["year"].unique()) == ["2019", "2020", "2021"] and set(got["site"]) == {"north", "south"}
    assert D.read_header(tmp_path / "part")[-2:] == ["year", "site"]
    ds = D.prepare(C.DataConfig(path=str(tmp_path / "part"), target="label"), 0, verbose=False)
    assert "year" in ds.feature_names and "site" in ds.feature_names
    # files under different keys, or a key that is also a column: named
    (tmp_path / "mixed" / "year=2020").mkdir(parents=True)
    frame.drop(columns="year").to_parquet(tmp_path / "mixed" / "year=2020" / "a.parquet")
    frame.drop(columns="year").to_parquet(tmp_path / "mixed" / "b.parquet")
    with pytest.raises(
        D.DataError,
        match=r"year=2020/a.parquet lies under the key=value sub-folder\(s\) \['year'\] but b.parquet under none",
    ):
        D.read_table(tmp_path / "mixed")
    (tmp_path / "clash" / "year=2020").mkdir(parents=True)
    frame.to_parquet(tmp_path / "clash" / "year=2020" / "a.parquet")
    with pytest.raises(D.DataError, match=r"partition key\(s\) 'year' are also columns"):
        D.read_table(tmp_path / "clash")


def test_nested_parquet_columns_are_refused_by_name_unless_dropped(tmp_path):
    n = 60
    for name, values in (
        ("lst", [[i % 3] for i in range(n)]),
        ("st", [{"k": i % 3} for i in range(n)]),
        ("raw", [bytes([i % 3]) for i in range(n)]),
    ):
        path = tmp_path / f"{name}.parquet"
        _frame(n).assign(**{name: values}).to_parquet(path)
        with pytest.raises(D.DataError, match=rf"{path}: column '{name}' holds .* not supported.*data.drop={name}"):
            D.prepare(C.DataConfig(path=str(path), target="label"), 0, verbose=False)
        ds = D.prepare(C.DataConfig(path=str(path), target="label", drop=(name,)), 0, verbose=False)
        assert ds.feature_names == ("a", "b", "c")
    with pytest.raises(D.DataError, match=r"column 'lst' holds nested values of type list<element: int64>"):
        D.read_table(tmp_path / "lst.parquet")


def test_parquet_decimals_are_read_as_numbers(tmp_path):
    from decimal import Decimal

    frame = _frame(200)
    rounded = frame["c"].round(2)
    as_decimal = frame.assign(c=[Decimal(f"{v:.2f}") for v in frame["c"]])
    as_decimal.to_parquet(tmp_path / "d.parquet")
    _parts(tmp_path / "parts", as_decimal.iloc[:100], as_decimal.iloc[100:].assign(c=lambda f: f["c"].map(Decimal)))
    frame.assign(c=rounded).to_csv(tmp_path / "f.csv", index=False)
    want = D.prepare(C.DataConfig(path=str(tmp_path / "f.csv"), target="label"), 0, verbose=False)
    for path in (tmp_path / "d.parquet", tmp_path / "parts"):
        assert D.read_table(path)["c"].dtype == np.float64
        ds = D.prepare(C.DataConfig(path=str(path), target="label"), 0, verbose=False)
        assert [r["role"] for r in ds.preprocessor.roles] == ["numeric"] * 3
        assert ds.preprocessor == want.preprocessor
        np.testing.assert_array_equal(ds.x_train, want.x_train)
    # a pandas frame holding decimal.Decimal objects (pd.read_parquet's view) encodes the same at prediction
    np.testing.assert_array_equal(
        want.preprocessor.transform(as_decimal).x, want.preprocessor.transform(frame.assign(c=rounded)).x
    )


# ----------------------------------------------------------------------------- text encoding, row numbers


def test_a_csv_that_is_not_utf8_is_named_at_read_time(tmp_path):
    text = _frame(60).assign(city=["café", "bar"] * 30).to_csv(index=False)
    path = tmp_path / "latin1.csv"
    path.write_bytes(text.encode("latin-1"))
    message = r"latin1.csv is not UTF-8 text \(line 2 holds byte 0xe9, .*Latin-1.*\); save it as UTF-8"
    with pytest.raises(D.DataError, match=message):
        D.prepare(C.DataConfig(path=str(path), target="label"), 0, verbose=False)
    with pytest.raises(D.DataError, match=r"the CSV body is not UTF-8 text \(line 2 .*save it as UTF-8"):
        D.read_csv_for_prediction(path.read_bytes(), ["a"])
    # a bad byte past the first MiB (where the header is looked for) is named by the reader the same way
    big = tmp_path / "late.csv"
    rows = _frame(60).assign(city="bar").to_csv(index=False)
    filler = "".join(rows.splitlines(keepends=True)[1:]) * ((2 << 20) // len(rows))
    big.write_bytes((rows + filler).encode() + "1.0,2.0,3.0,yes,café\n".encode("latin-1"))
    late = len(rows.splitlines()) - 1 + len(filler.splitlines()) + 1
    for read, detail in (
        (lambda: D.read_table(big), rf"column 'city', data row {late} \(line {late + 1}\) holds b'caf\\xe9'"),
        (lambda: D.read_csv_for_prediction(big, ["a"]), r"pyarrow: .*invalid UTF8"),
    ):
        with pytest.raises(D.DataError, match=rf"late.csv is not UTF-8 text \({detail}.*\); save it as UTF-8"):
            read()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_training_errors_name_the_row_of_the_file_not_of_the_shuffled_split(tmp_path, seed):
    frame = _frame(100)
    frame.loc[[3, 8], "b"] = -np.inf  # data rows 4 and 9
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_parquet(tmp_path / "t.parquet")
    _parts(tmp_path / "parts", frame.iloc[:2], frame.iloc[2:])
    for name, row in (
        ("t.csv", "data row 4 \\(line 5\\)"),
        ("t.parquet", "row 4"),
        ("parts", "row 2 of b.parquet"),
    ):
        with pytest.raises(D.DataError, match=rf"{name}: column 'b', {row}: non-finite value -inf$"):
            D.prepare(C.DataConfig(path=str(tmp_path / name), target="label"), seed, verbose=False)
    # a regression target: its first non-finite value, by row
    reg = _frame(100).drop(columns="label").assign(y=np.arange(100.0))
    reg.loc[[6, 7], "y"] = [np.inf, -np.inf]
    reg.to_csv(tmp_path / "r.csv", index=False)
    with pytest.raises(D.DataError, match=r"'y' has non-finite values \(first: inf, data row 7 \(line 8\)\)"):
        D.prepare(C.DataConfig(path=str(tmp_path / "r.csv"), target="y", task="regression"), seed, verbose=False)
