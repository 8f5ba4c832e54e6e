"""Column roles, imputation, scaling, category codes and targets on real tables and files."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlp_jax import config as C
from mlp_jax import data as D
from mlp_jax.features import FeatureError, Preprocessor, TargetSpec, embedding_width


def penguins_csv() -> Path:
    palmerpenguins = pytest.importorskip("palmerpenguins")
    return Path(palmerpenguins.__file__).parent / "data" / "penguins.csv"


def every_kind(n=400, seed=0) -> pd.DataFrame:
    """One column of each kind: gaps, boolean, low/high-cardinality text, an id, a constant."""
    rng = np.random.default_rng(seed)
    num = rng.normal(size=n)
    num[rng.random(n) < 0.1] = np.nan
    flag = rng.random(n) < 0.4
    return pd.DataFrame(
        {
            "id": [f"row-{i:05d}" for i in range(n)],
            "num": num,
            "count": rng.integers(0, 100, n),
            "flag": np.where(flag, "yes", "no"),
            "colour": rng.choice(["red", "green", "blue"], n),
            "city": rng.choice([f"city{i:02d}" for i in range(20)], n),
            "const": 7.0,
            "label": rng.choice(["a", "b"], n),
        }
    )


def cfg(**kw) -> C.DataConfig:
    return C.DataConfig(target=kw.pop("target", "label"), **kw)


def test_penguins_roles_and_missing_handling():
    ds = D.prepare(C.DataConfig(path=str(penguins_csv()), target="species"), 0, verbose=False)
    roles = {r["name"]: r["role"] for r in ds.preprocessor.roles}
    assert roles == {
        "island": "categorical",
        "bill_length_mm": "numeric",
        "bill_depth_mm": "numeric",
        "flipper_length_mm": "numeric",
        "body_mass_g": "numeric",
        "sex": "categorical",  # male/female: two values but not a true/false pair
        "year": "numeric",
    }
    assert ds.classes == ("Adelie", "Chinstrap", "Gentoo")
    assert ds.feature_names == ds.preprocessor.input_columns
    assert ds.preprocessor.cardinalities == (5, 4)  # 3 islands / 2 sexes + missing + unknown
    assert ds.preprocessor.embedding_dims == (0, 0)
    assert ds.n_features == ds.preprocessor.n_dense + 2
    for x in (ds.x_train, ds.x_val, ds.x_test):
        assert x.dtype == np.float32 and np.isfinite(x).all()
    sex = ds.n_features - 1
    frame = pd.read_csv(penguins_csv())
    assert frame["sex"].isna().sum() == 11  # the table's gaps: missing sex is its own slot (0)
    n_missing_sex = sum(int((x[:, sex] == 0).sum()) for x in (ds.x_train, ds.x_val, ds.x_test))
    assert n_missing_sex == 11
    # the raw test rows kept on the dataset give the same matrix (what a predictor must reproduce)
    np.testing.assert_array_equal(ds.preprocessor.transform(ds.test_frame).x, ds.x_test)
    # a raw row with gaps, as a request would send it: imputed, never an error
    row = {
        "island": "Biscoe",
        "bill_length_mm": "NA",
        "bill_depth_mm": None,
        "flipper_length_mm": 200,
        "body_mass_g": "4000",
        "sex": None,
        "year": 2008,
    }
    x = ds.preprocessor.transform(pd.DataFrame([row])).x
    assert np.isfinite(x).all() and x[0, sex] == 0


def test_csv_and_parquet_give_identical_matrices(tmp_path):
    frame = every_kind()
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_parquet(tmp_path / "t.parquet")
    parts = tmp_path / "parts"
    parts.mkdir()
    frame.iloc[:200].to_parquet(parts / "0.parquet")
    frame.iloc[200:].to_parquet(parts / "1.parquet")
    c = cfg(drop=("id",))
    a, b, f = (
        D.prepare(C.DataConfig(**{**c.__dict__, "path": str(p)}), 0, verbose=False)
        for p in (tmp_path / "t.csv", tmp_path / "t.parquet", parts)
    )
    for other in (b, f):
        for split in ("x_train", "x_val", "x_test", "y_train", "y_test"):
            np.testing.assert_array_equal(getattr(a, split), getattr(other, split))
        assert other.preprocessor == a.preprocessor
    roles = {r["name"]: r["role"] for r in a.preprocessor.roles}
    assert roles == {
        "num": "numeric",
        "count": "numeric",
        "flag": "boolean",
        "colour": "categorical",
        "city": "categorical",
        "const": "numeric",
    }
    assert a.preprocessor.dense_names == ("num", "count", "const", "num__missing", "flag")
    assert a.preprocessor.cardinalities == (5, 22)  # 3 / 20 values + missing + unknown
    assert a.preprocessor.embedding_dims == (0, embedding_width(22, 10, 32)) == (0, 9)
    assert a.digest != b.digest and len(f.digest) == 16


def test_identifier_column_refused_with_a_hint(tmp_path):
    path = tmp_path / "t.csv"
    every_kind().to_csv(path, index=False)
    with pytest.raises(D.DataError, match=r"'id' looks like an identifier.*data.drop=id"):
        D.prepare(C.DataConfig(path=str(path), target="label"), 0, verbose=False)


def test_unknown_drop_or_categorical_name_refused():
    with pytest.raises(FeatureError, match=r"data.drop names column.*'nope'"):
        Preprocessor.fit(every_kind(), cfg(drop=("id", "nope")))
    with pytest.raises(FeatureError, match=r"data.categorical names column.*'zzz'"):
        Preprocessor.fit(every_kind(), cfg(drop=("id",), categorical=("zzz",)))


def test_all_missing_column_refused():
    frame = every_kind().assign(empty=np.nan)
    with pytest.raises(FeatureError, match=r"'empty' has no values.*data.drop=empty"):
        Preprocessor.fit(frame, cfg(drop=("id",)))


def test_numeric_imputed_with_train_median_and_indicator():
    frame = every_kind()
    pre = Preprocessor.fit(frame, cfg(drop=("id",)))
    spec = pre.columns[0]
    assert spec.name == "num" and spec.indicator and spec.fill == pytest.approx(np.nanmedian(frame["num"]))
    out = pre.transform(frame.assign(num=[None, "NA", "", 1.5] + [2.0] * (len(frame) - 4))).x
    i_num, i_ind = pre.dense_names.index("num"), pre.dense_names.index("num__missing")
    np.testing.assert_array_equal(out[:4, i_ind], [1, 1, 1, 0])
    assert out[0, i_num] == out[1, i_num] == out[2, i_num] == pytest.approx((spec.fill - spec.center) / spec.scale)


def test_missing_error_policy_names_columns_and_counts():
    with pytest.raises(FeatureError, match=r"missing values in feature column\(s\): num \(\d+ rows\)"):
        Preprocessor.fit(every_kind(), cfg(drop=("id",), missing="error"))


def test_infinite_value_refused_naming_the_column():
    frame = every_kind().assign(count=lambda f: f["count"].astype(float))
    frame.loc[5, "count"] = np.inf
    with pytest.raises(FeatureError, match=r"column 'count', row 5: non-finite value inf$"):  # inf, not np.float64(inf)
        Preprocessor.fit(frame, cfg(drop=("id",)))


def test_unseen_and_rare_categories_go_to_the_unknown_slot_and_are_counted():
    frame = every_kind()
    pre = Preprocessor.fit(frame, cfg(drop=("id",)))
    rows = frame.head(4).assign(colour=["red", "purple", None, "mauve"])
    t = pre.transform(rows)
    col = pre.n_dense + pre.categorical_columns.index("colour")
    colour = next(s for s in pre.columns if s.name == "colour")
    assert t.x[:, col].tolist() == [2 + colour.vocabulary.index("red"), 1, 0, 1]
    assert t.unknown_counts == {"colour": 2, "city": 0}
    rare = Preprocessor.fit(frame.assign(colour=["rare", *frame["colour"][1:]]), cfg(drop=("id",)))
    assert "rare" not in next(s for s in rare.columns if s.name == "colour").vocabulary  # once < 5


def test_numeric_text_accepted_and_bad_text_names_column_and_row():
    frame = every_kind()
    pre = Preprocessor.fit(frame, cfg(drop=("id",)))
    raw = frame.head(5)
    as_text = raw.assign(num=raw["num"].map(lambda v: "" if np.isnan(v) else repr(v)), count=raw["count"].astype(str))
    np.testing.assert_array_equal(pre.transform(as_text).x, pre.transform(raw).x)
    with pytest.raises(FeatureError, match=r"column 'count', row 3: expected a number, got 'lots'") as info:
        pre.transform(as_text.assign(count=["1", "2", "3", "lots", "5"]))
    assert (info.value.column, info.value.row) == ("count", 3)
    with pytest.raises(FeatureError, match="row 12"):
        pre.transform(as_text.assign(count=["1", "2", "3", "lots", "5"]), row_offset=9)
    with pytest.raises(FeatureError, match=r"column 'flag', row 1: expected a boolean"):
        pre.transform(raw.assign(flag=["yes", "maybe", "no", "no", "yes"]))


def test_missing_column_named_and_extra_columns_ignored():
    frame = every_kind()
    pre = Preprocessor.fit(frame, cfg(drop=("id",)))
    with pytest.raises(FeatureError, match=r"missing column.*'city'"):
        pre.transform(frame.drop(columns=["city"]))
    np.testing.assert_array_equal(pre.transform(frame.assign(extra=1)).x, pre.transform(frame).x)


def test_constant_column_has_no_effect_whatever_comes_in():
    frame = every_kind()
    pre = Preprocessor.fit(frame, cfg(drop=("id",)))
    i = pre.dense_names.index("const")
    for value in (7.0, -1e30, 3.5, None):
        assert (pre.transform(frame.head(3).assign(const=value)).x[:, i] == 0).all()


def test_boolean_forms_agree():
    frame = every_kind()
    pre = Preprocessor.fit(frame, cfg(drop=("id",)))
    i = pre.dense_names.index("flag")
    forms = [["yes", "no", "YES"], [True, False, True], [1, 0, 1], ["true", "False", " y "]]
    for form in forms:
        assert pre.transform(frame.head(3).assign(flag=form)).x[:, i].tolist() == [1, 0, 1]


def test_numeric_column_named_categorical_keys_numbers_by_value():
    frame = every_kind()
    pre = Preprocessor.fit(frame, cfg(drop=("id",), categorical=("count",)))
    col = pre.n_dense + pre.categorical_columns.index("count")
    a = pre.transform(frame.head(3).assign(count=[5, 5.0, "5"])).x[:, col]
    assert a[0] == a[1] == a[2] and a[0] >= 2


@pytest.mark.parametrize("written", ["ints", "floats_with_a_gap"])
def test_codes_read_as_text_key_numbers_by_value(tmp_path, written):
    # integer codes in data.categorical, as a CSV gives them (text), or as pandas writes them once the
    # column has a gap ("2.0"): 3, 3.0, "3" and "3.0" are one category in training and at prediction
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 4, 200).astype(float)
    if written == "floats_with_a_gap":
        codes[0] = np.nan
    frame = pd.DataFrame({"code": codes if written != "ints" else codes.astype(int), "y": rng.choice(["a", "b"], 200)})
    path = frame.to_csv(tmp_path / "codes.csv", index=False) or tmp_path / "codes.csv"
    table = D.load_table(cfg(path=str(path), target="y", categorical=("code",)))
    pre = Preprocessor.fit(table.frame.drop(columns="y"), cfg(target="y", categorical=("code",)))
    (spec,) = pre.columns
    assert spec.kind == "number" and spec.vocabulary == ("0", "1", "2", "3")
    x = pre.transform(pd.DataFrame({"code": [3, 3.0, "3", "3.0", " 3 "]})).x[:, pre.n_dense]
    assert len(set(x.tolist())) == 1 and x[0] >= 2  # one known slot (0: missing, 1: unknown)
    assert pre.transform(pd.DataFrame({"code": [7]})).unknown_counts["code"] == 1
    assert any("integer codes, keyed by value" in n for n in pre.notes)
    # codes whose spelling carries meaning stay text: leading zeros ("007" is not 7), versions
    # ("1.1" vs "1.10"), ICD codes ("250.0" vs "250.00"), exponents, and more than 15 digits
    # (account numbers float64 would merge)
    spelled = {
        "zeros": ["007", "010", "123"],
        "versions": ["1.1", "1.10", "1.2"],
        "icd": ["250.0", "250.00", "250.01"],
        "exponent": ["1e5", "100000", "7"],
        "accounts": ["90071992547409930", "90071992547409931", "90071992547409932"],
    }
    for name, values in spelled.items():
        pre = Preprocessor.fit(pd.DataFrame({"code": values * 10}), cfg(categorical=("code",)))
        assert pre.columns[0].kind == "text" and len(pre.columns[0].vocabulary) == 3, name
    pre = Preprocessor.fit(pd.DataFrame({"code": ["007", "010", "123"] * 10}), cfg(categorical=("code",)))
    assert pre.transform(pd.DataFrame({"code": ["7"]})).unknown_counts["code"] == 1


def test_json_round_trip_gives_identical_transform():
    frame = every_kind()
    pre = Preprocessor.fit(frame, cfg(drop=("id",), scaling="standard"))
    again = Preprocessor.from_dict(json.loads(json.dumps(pre.to_dict())))
    assert again == pre
    np.testing.assert_array_equal(again.transform(frame).x, pre.transform(frame).x)
    assert again.roles == pre.roles and again.cardinalities == pre.cardinalities
    with pytest.raises(FeatureError, match=r"format"):
        Preprocessor.from_dict({**pre.to_dict(), "format": 99})


def test_transform_is_vectorised_on_many_rows():
    rng = np.random.default_rng(1)
    n = 200_000
    big = pd.DataFrame(
        {
            "x": rng.normal(size=n),
            "a": rng.choice(list("abcdef"), n),
            "b": rng.choice([f"v{i}" for i in range(300)], n),
            "c": rng.choice([f"w{i}" for i in range(30)], n).astype(object),
        }
    )
    pre = Preprocessor.fit(big, cfg(target="none"))
    t = pre.transform(big)
    assert t.x.shape == (n, 4)
    # the codes agree with a plain per-value lookup on a sample
    for j, s in enumerate(pre.columns[1:], start=1):
        got = t.x[:1000, j].astype(int)
        want = [2 + s.vocabulary.index(v) for v in big[s.name][:1000]]
        assert got.tolist() == want


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["True", "False", "True"], (False, True)),
        (["007", "012", "007"], ("007", "012")),
        (["cat", "dog", "cat"], ("cat", "dog")),
        (["1.0", "2.0", "1.0"], (1, 2)),
    ],
)
def test_classification_labels_round_trip_exactly(values, expected):
    spec = TargetSpec.fit(pd.DataFrame({"y": pd.Series(values, dtype=object)}), "classification", ["y"])
    assert spec.classes == expected
    assert [type(c) for c in spec.classes] == [type(e) for e in expected]
    assert TargetSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_regression_target_statistics_and_decode():
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [10.0, 10.0, 30.0, 30.0]})
    spec = TargetSpec.fit(frame, "regression", ["a", "b"])
    y = spec.encode(frame)
    assert y.shape == (4, 2) and y.dtype == np.float32
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-6)
    np.testing.assert_allclose(spec.decode(y), frame.to_numpy(), rtol=1e-6)


def test_numbers_spoiled_by_placeholders_or_separators_are_named_not_called_identifiers(tmp_path):
    rng = np.random.default_rng(0)
    n = 300
    x = pd.Series(rng.normal(size=n).round(4).astype(str))
    x[[17, 40]] = ["?", "-"]  # UCI-style "missing" marks in a numeric column
    frame = pd.DataFrame({"x1": x, "y": rng.integers(0, 2, n)})
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(
        D.DataError, match=r"'x1' holds numbers except \d cell\(s\) of text: '\?' in data row 18 \(line 19\)"
    ) as e:
        D.prepare(C.DataConfig(path=str(path), target="y"), 0, verbose=False)
    assert "identifier" not in str(e.value) and "make the cells empty" in str(e.value)
    grouped = frame.assign(x1=[f"{v:,.2f}" for v in rng.uniform(1_000, 1e6, n)])
    with pytest.raises(FeatureError, match=r"'x1' holds numbers written with thousands separators"):
        Preprocessor.fit(grouped, cfg(target="y"))
    # few distinct values: still categories, with a note saying why it may not be what was meant
    rating = frame.assign(x1=rng.integers(1, 6, n).astype(str))
    rating.loc[3, "x1"] = "?"
    pre = Preprocessor.fit(rating, cfg(target="y"))
    assert pre.categorical_columns == ("x1",)
    assert any(note.startswith("x1: treated as categories, but it holds numbers except 1") for note in pre.notes)
    assert Preprocessor.fit(frame.assign(x1=rng.choice(["a", "b"], n)), cfg(target="y")).notes == ()


def test_regression_targets_that_are_constant_or_overflow_are_refused_by_name():
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [5.0, 5.0, 5.0, 5.0]})
    with pytest.raises(FeatureError, match=r"'b' is constant in the training rows \(every value is 5\)"):
        TargetSpec.fit(frame, "regression", ["a", "b"])
    huge = frame.assign(b=[1e190, -3e190, 2e190, 5e189])
    with pytest.raises(FeatureError, match=r"'b' has values up to 3e\+190 .*overflow float64: rescale"):
        TargetSpec.fit(huge, "regression", ["a", "b"])
    spec = TargetSpec.fit(frame.assign(b=[1e149, -3e149, 2e149, 5e148]), "regression", ["a", "b"])
    assert all(np.isfinite(spec.scale)) and spec.scale[1] > 0


def test_feature_scale_of_huge_numbers_is_finite():
    frame = pd.DataFrame({"big": [0.0, 0.0, 0.0, 0.0, 0.0, 3e200, -2e200, 0.0], "y": [0, 1] * 4})
    pre = Preprocessor.fit(frame, cfg(target="y"))  # IQR 0: falls back to the standard deviation
    (spec,) = pre.columns
    assert np.isfinite(spec.scale) and spec.scale > 1e199
    z = pre.transform(frame).x[:, 0]
    assert np.isfinite(z).all() and z[5] > 0 > z[6]


def test_names_with_surrounding_spaces_are_quoted_in_the_column_list():
    frame = pd.DataFrame({" x 2 ": [1.0, 2.0, 3.0], "x1": [1.0, 2.0, 4.0], "label": [0, 1, 0]})
    with pytest.raises(FeatureError, match=r"columns are: ' x 2 ', x1, label"):
        Preprocessor.fit(frame, cfg(drop=("x 2",)))


def test_row_name_words_the_rows_errors_name_from_their_index_labels():
    frame = every_kind()
    pre = Preprocessor.fit(frame, cfg(drop=("id",)))
    rows = frame.iloc[[30, 10, 20]]  # shuffled, as a split leaves them: labels are rows of the file
    named = {"row_name": lambda label: f"data row {label + 1}"}
    with pytest.raises(FeatureError, match=r"column 'flag', data row 11: expected a boolean .*, got 'maybe'") as e:
        pre.transform(rows.assign(flag=["yes", "maybe", "no"]), **named)
    assert (e.value.column, e.value.row) == ("flag", 1)  # .row stays the position in the frame given
    with pytest.raises(FeatureError, match=r"column 'num', data row 21: non-finite value -inf$"):
        pre.transform(rows.assign(num=[1.0, 2.0, -np.inf]), **named)
    with pytest.raises(FeatureError, match=r"column 'num', row 2: non-finite value -inf$"):  # without: positions
        pre.transform(rows.assign(num=[1.0, 2.0, -np.inf]))
    strict = Preprocessor.fit(frame.assign(num=frame["num"].fillna(0.0)), cfg(drop=("id",), missing="error"))
    with pytest.raises(FeatureError, match=r"column 'num', data row 31: missing value \(data.missing=error\)"):
        strict.transform(rows.assign(num=[None, 1.0, 2.0]), **named)
    spoiled = frame.assign(num=(np.arange(len(frame)) * 1.5).astype(str))
    spoiled.loc[[7, 99], "num"] = "?"
    with pytest.raises(FeatureError, match=r"text: '\?' in data row 100, '\?' in data row 8; if those mean"):
        Preprocessor.fit(spoiled.iloc[::-1], cfg(drop=("id",)), **named)
    with pytest.raises(FeatureError, match=r"text: '\?' in row 300, '\?' in row 392; if those mean"):
        Preprocessor.fit(spoiled.iloc[::-1], cfg(drop=("id",)))


def test_nested_values_are_refused_by_column_not_with_a_traceback():
    frame = every_kind()
    for values in ([[i % 3] for i in range(len(frame))], [np.array([i % 3]) for i in range(len(frame))]):
        with pytest.raises(FeatureError, match=r"column 'lst' holds nested values .*data.drop=lst"):
            Preprocessor.fit(frame.assign(lst=values), cfg(drop=("id",)))
    pre = Preprocessor.fit(frame.assign(lst=[{"k": 1}] * len(frame)), cfg(drop=("id", "lst")))
    assert "lst" not in pre.input_columns
