"""The huggingface connector on real datasets built with the `datasets` library from real prompts:
save_to_disk Datasets and DatasetDicts, and Hub-layout Parquet folders (one config, two configs,
README.md configs)."""

from __future__ import annotations

import polars as pl
import pyarrow as pa
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from services_s3 import AWS_ENV, new_bucket

from connectors import HuggingFaceConnector, load_connector
from curation.exceptions import DataError, InvalidParameterError
from curation.ingest import ROW_COL, UNIT_COL
from curation.recipe import SourceConfig


@pytest.fixture(scope="module")
def prompts(evals) -> pl.DataFrame:
    """300 real prompts from three tasks, with a doc_id column."""
    df = evals.filter(pl.col("task").is_in(["chess", "rot13", "french-lexicon"])).sort("prompt_id")
    return df.group_by("task", maintain_order=True).head(100).select(doc_id="prompt_id", text="text", lang="lang",
                                                                     task="task")


def ds(df: pl.DataFrame, **kw) -> Dataset:
    return Dataset.from_dict(df.to_dict(as_series=False), **kw)


def source(path, **kw) -> SourceConfig:
    return SourceConfig(**{"name": "hub", "kind": "huggingface", "path": str(path), "id": "doc_id", "text": "text",
                           **kw})


def read(conn) -> pa.Table:
    return pa.concat_tables(list(conn.iter_batches()))


def test_the_kind_is_registered_and_the_recipe_accepts_its_keys(tmp_path):
    assert load_connector("huggingface") is HuggingFaceConnector
    assert source(tmp_path, split="test", config="en").split == "test"


def test_a_saved_dataset_is_read_in_order_from_its_arrow_shards(tmp_path, prompts):
    ds(prompts).save_to_disk(tmp_path / "d", num_shards=3)
    conn = HuggingFaceConnector(source(tmp_path / "d"))
    assert conn.units() == [str(tmp_path / "d" / f"data-0000{i}-of-00003.arrow") for i in range(3)]
    t = read(conn)
    assert t["doc_id"].to_pylist() == prompts["doc_id"].to_list()  # every row once, in the dataset's order
    assert t["text"].to_pylist() == prompts["text"].to_list()
    rows, units = t[ROW_COL].to_pylist(), t[UNIT_COL].to_pylist()
    assert rows[:3] == [1, 2, 3] and rows[100] == 1  # 1-based within each shard (100 rows each)
    assert units[0] == conn.units()[0] and units[-1] == conn.units()[-1]


def test_a_dataset_dict_defaults_to_train_and_reads_a_named_split(tmp_path, prompts):
    DatasetDict({"train": ds(prompts.head(200)), "test": ds(prompts.slice(200, 60)),
                 "validation": ds(prompts.tail(40))}).save_to_disk(tmp_path / "dd")
    assert read(HuggingFaceConnector(source(tmp_path / "dd")))["doc_id"].to_pylist() == \
        prompts.head(200)["doc_id"].to_list()
    conn = HuggingFaceConnector(source(tmp_path / "dd", split="test"))
    assert conn.units() == [str(tmp_path / "dd" / "test" / "data-00000-of-00001.arrow")]
    assert read(conn)["doc_id"].to_pylist() == prompts.slice(200, 60)["doc_id"].to_list()


def test_an_unknown_split_is_a_settings_error_listing_the_splits(tmp_path, prompts):
    DatasetDict({"train": ds(prompts.head(5)), "test": ds(prompts.tail(5))}).save_to_disk(tmp_path / "dd")
    with pytest.raises(InvalidParameterError, match=r"^sources\[hub\]\.split='dev' is not a split of '.*dd' "
                                                    r"\(config 'default'\); splits: test, train$"):
        HuggingFaceConnector(source(tmp_path / "dd", split="dev")).check()


def test_without_train_and_without_split_the_choice_is_asked_for(tmp_path, prompts):
    DatasetDict({"test": ds(prompts.head(5)), "validation": ds(prompts.tail(5))}).save_to_disk(tmp_path / "dd")
    with pytest.raises(InvalidParameterError, match=r"^sources\[hub\]\.split: .* has no train split; "
                                                    r"splits: test, validation; set split: to one of them$"):
        HuggingFaceConnector(source(tmp_path / "dd")).units()
    only = tmp_path / "only"
    DatasetDict({"validation": ds(prompts.head(7))}).save_to_disk(only)
    assert read(HuggingFaceConnector(source(only))).num_rows == 7  # the only split is the default


def test_a_lone_dataset_is_the_split_its_state_names(tmp_path, prompts):
    ds(prompts.head(9), split="test").save_to_disk(tmp_path / "t")
    assert read(HuggingFaceConnector(source(tmp_path / "t"))).num_rows == 9
    with pytest.raises(InvalidParameterError, match=r"split='train' is not a split of .*; splits: test$"):
        HuggingFaceConnector(source(tmp_path / "t", split="train")).units()


def test_a_saved_dataset_has_one_configuration(tmp_path, prompts):
    ds(prompts.head(5)).save_to_disk(tmp_path / "d")
    with pytest.raises(InvalidParameterError, match=r"config='en' is not a configuration of .*\(a save_to_disk "
                                                    r"Dataset\); configurations: default$"):
        HuggingFaceConnector(source(tmp_path / "d", config="en")).units()


def test_class_label_columns_keep_their_integer_ids(tmp_path, prompts):
    df = prompts.head(6)
    features = Features({"doc_id": Value("string"), "text": Value("string"), "lang": Value("string"),
                         "task": ClassLabel(names=sorted(set(prompts["task"])))})
    Dataset.from_dict(df.to_dict(as_series=False), features=features).save_to_disk(tmp_path / "d")
    tasks = read(HuggingFaceConnector(source(tmp_path / "d")))["task"]
    assert pa.types.is_integer(tasks.type)
    assert tasks.to_pylist() == [features["task"].str2int(t) for t in df["task"]]


def test_fingerprints_name_each_file_and_change_when_the_dataset_is_saved_again(tmp_path, prompts):
    ds(prompts.head(50)).save_to_disk(tmp_path / "d", num_shards=2)
    fp1 = HuggingFaceConnector(source(tmp_path / "d")).fingerprints()
    assert [f["path"] for f in fp1] == [str(tmp_path / "d" / f"data-0000{i}-of-00002.arrow") for i in range(2)]
    assert all(f["bytes"] > 0 and len(f["sha256"]) == 64 for f in fp1)
    changed = prompts.head(50).with_columns(text=pl.col("text").str.to_uppercase())
    ds(changed).save_to_disk(tmp_path / "d2", num_shards=2)
    for f in (tmp_path / "d2").glob("data-*.arrow"):
        (tmp_path / "d" / f.name).write_bytes(f.read_bytes())
    fp2 = HuggingFaceConnector(source(tmp_path / "d")).fingerprints()
    assert [f["sha256"] for f in fp2] != [f["sha256"] for f in fp1]


# -------------------------------------------------------------------------------- Hub layout
@pytest.fixture
def hub(tmp_path, prompts):
    """data/train-00000-of-00002, data/train-00001-of-00002 and data/test-00000-of-00001 Parquet."""
    root = tmp_path / "hub"
    (root / "data").mkdir(parents=True)
    ds(prompts.head(100)).to_parquet(root / "data" / "train-00000-of-00002.parquet")
    ds(prompts.slice(100, 100)).to_parquet(root / "data" / "train-00001-of-00002.parquet")
    ds(prompts.tail(100)).to_parquet(root / "data" / "test-00000-of-00001.parquet")
    (root / "README.md").write_text("# reviews\n\nNo front matter: the layout names the splits.\n")
    return root


def test_a_hub_folder_reads_its_train_shards_in_order_by_default(hub, prompts):
    conn = HuggingFaceConnector(source(hub))
    assert conn.units() == [str(hub / "data" / f"train-0000{i}-of-00002.parquet") for i in range(2)]
    t = read(conn)
    assert t["doc_id"].to_pylist() == prompts.head(200)["doc_id"].to_list()
    assert t[ROW_COL].to_pylist()[99:101] == [100, 1]


def test_a_hub_folder_reads_the_named_split_and_lists_the_splits_for_an_unknown_one(hub, prompts):
    assert read(HuggingFaceConnector(source(hub, split="test")))["doc_id"].to_pylist() == \
        prompts.tail(100)["doc_id"].to_list()
    with pytest.raises(InvalidParameterError, match=r"split='validation' is not a split of .*; splits: test, train$"):
        HuggingFaceConnector(source(hub, split="validation")).units()


@pytest.fixture
def two_configs(tmp_path, prompts):
    """en/train-*.parquet + en/test/0000.parquet, fr/ the same: two configurations, neither default."""
    root = tmp_path / "two"
    for i, config in enumerate(("en", "fr")):
        (root / config / "test").mkdir(parents=True)
        part = prompts.slice(150 * i, 150)
        ds(part.head(100)).to_parquet(root / config / "train-00000-of-00001.parquet")
        ds(part.tail(50)).to_parquet(root / config / "test" / "0000.parquet")
    return root


def test_two_configurations_need_a_choice_and_the_message_lists_them(two_configs):
    with pytest.raises(InvalidParameterError, match=r"^sources\[hub\]\.config: .* has several configurations and "
                                                    r"none is the default: en, fr; set config: to one of them$"):
        HuggingFaceConnector(source(two_configs)).units()
    with pytest.raises(InvalidParameterError, match=r"config='de' is not a configuration of .*; configurations: en, fr$"):
        HuggingFaceConnector(source(two_configs, config="de")).units()


def test_a_configuration_and_split_select_their_files(two_configs, prompts):
    conn = HuggingFaceConnector(source(two_configs, config="fr", split="test"))
    assert conn.units() == [str(two_configs / "fr" / "test" / "0000.parquet")]
    assert read(conn)["doc_id"].to_pylist() == prompts.slice(150, 150).tail(50)["doc_id"].to_list()
    fr_train = read(HuggingFaceConnector(source(two_configs, config="fr")))
    assert fr_train["doc_id"].to_pylist() == prompts.slice(150, 100)["doc_id"].to_list()


def test_readme_configs_are_followed_with_their_default(two_configs, prompts):
    (two_configs / "README.md").write_text(
        "---\nlicense: cc-by-4.0\nconfigs:\n"
        "- config_name: english\n  data_files:\n  - split: train\n    path: en/train-*\n"
        "  - split: test\n    path: en/test/*.parquet\n"
        "- config_name: french\n  default: true\n  data_files:\n  - split: train\n    path: [fr/train-*]\n"
        "---\n# two languages\n")
    conn = HuggingFaceConnector(source(two_configs))  # french is marked default
    assert conn.units() == [str(two_configs / "fr" / "train-00000-of-00001.parquet")]
    assert read(HuggingFaceConnector(source(two_configs, config="english", split="test"))).num_rows == 50
    with pytest.raises(InvalidParameterError, match=r"configurations: english, french$"):
        HuggingFaceConnector(source(two_configs, config="en")).units()
    with pytest.raises(InvalidParameterError, match=r"split='test' is not a split of .*\(config 'french'\); splits: train$"):
        HuggingFaceConnector(source(two_configs, split="test")).units()


def test_a_readme_config_with_only_a_data_dir_infers_its_splits_inside_it(two_configs, prompts):
    (two_configs / "README.md").write_text("---\nconfigs:\n- config_name: default\n  data_dir: fr\n---\n")
    conn = HuggingFaceConnector(source(two_configs, split="test"))
    assert conn.units() == [str(two_configs / "fr" / "test" / "0000.parquet")]
    assert read(conn)["doc_id"].to_pylist() == prompts.slice(250, 50)["doc_id"].to_list()


def test_a_readme_pattern_matching_nothing_is_a_data_error(two_configs):
    (two_configs / "README.md").write_text("---\nconfigs:\n- config_name: default\n  data_files: de/*.parquet\n---\n")
    with pytest.raises(DataError, match=r"data_files entry 'de/\*\.parquet' matches no file"):
        HuggingFaceConnector(source(two_configs)).units()


def test_a_directory_that_is_no_dataset_and_a_missing_one(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("hello")
    with pytest.raises(DataError, match=r"holds neither a save_to_disk dataset .* nor Parquet files in a Hub layout"):
        HuggingFaceConnector(source(tmp_path / "notes")).check()
    with pytest.raises(FileNotFoundError, match=r"^sources\[hub\]\.path: directory '.*nope' does not exist"):
        HuggingFaceConnector(source(tmp_path / "nope")).check()


def test_a_missing_arrow_shard_is_named(tmp_path, prompts):
    ds(prompts.head(20)).save_to_disk(tmp_path / "d", num_shards=2)
    (tmp_path / "d" / "data-00001-of-00002.arrow").unlink()
    with pytest.raises(DataError, match=r"state\.json lists .*data-00001-of-00002\.arrow, which does not exist"):
        HuggingFaceConnector(source(tmp_path / "d")).units()


def test_a_dataset_dict_in_an_object_store_is_read_through_fsspec(tmp_path, prompts, s3_server, monkeypatch):
    for k, v in AWS_ENV.items():
        monkeypatch.setenv(k, v)
    DatasetDict({"train": ds(prompts.head(120)), "test": ds(prompts.tail(30))}).save_to_disk(tmp_path / "dd", num_shards={
        "train": 2, "test": 1})
    fs, bucket = new_bucket(s3_server)
    fs.put(str(tmp_path / "dd"), f"{bucket}/hf/dd", recursive=True)
    conn = HuggingFaceConnector(source(f"s3://{bucket}/hf/dd", storage_options={"endpoint_url": s3_server}))
    assert conn.units() == [f"s3://{bucket}/hf/dd/train/data-0000{i}-of-00002.arrow" for i in range(2)]
    t = read(conn)
    assert t["doc_id"].to_pylist() == prompts.head(120)["doc_id"].to_list()
    assert t[UNIT_COL].to_pylist()[0] == conn.units()[0]
    fp = conn.fingerprints()
    assert [f["path"] for f in fp] == conn.units() and all(f["etag"] for f in fp)
    with pytest.raises(InvalidParameterError, match=r"splits: test, train$"):
        HuggingFaceConnector(source(f"s3://{bucket}/hf/dd", split="dev",
                                    storage_options={"endpoint_url": s3_server})).units()
