from __future__ import annotations

import json

import pytest

from tether.errors import KitfileError
from tether.manifest.kitfile import Kitfile

FULL = """\
manifestVersion: 1.0.0
package:
  name: sentiment
  version: 1.10
  description: demo
  license: Apache-2.0
  authors: [Jane Doe, John]
model:
  name: sentiment-model
  path: models/model.safetensors
  license: Apache-2.0
  framework: PyTorch
  format: safetensors
  version: 2
  description: the model
  parts:
    - {name: tokenizer, path: models/tokenizer, type: tokenizer, license: MIT}
  parameters: {lr: 0.001, epochs: 3, mask: 0xFF, nested: {b: [1, 2], a: true}}
code:
  - {path: src, description: training code, license: Apache-2.0}
datasets:
  - name: train
    path: data/train.csv
    description: training split
    license: CC-BY-4.0
    parameters: {rows: 1000}
  - name: big
    remotePath: s3://bucket/big.parquet
    remoteHash: '"9b2cf5"'
docs:
  - {path: README.md, description: readme}
prompts:
  - {name: system, path: prompts/system.prompt.md}
mcpServers:
  - {name: fs, path: tools/fs.mcpb}
"""


def test_full_schema_parses() -> None:
    kf, warnings = Kitfile.from_yaml(FULL)
    assert kf.package and kf.package.version == "1.10", "string fields keep the text written"
    assert kf.model and kf.model.version == "2"
    assert kf.model.parameters == {
        "lr": 0.001,
        "epochs": 3,
        "mask": 255,
        "nested": {"b": [1, 2], "a": True},
    }
    assert [s.section for s in kf.layer_specs()] == [
        "model",
        "parts",
        "code",
        "datasets",
        "docs",
        "prompts",
        "mcpServers",
    ]
    assert any("s3://bucket/big.parquet" in w for w in warnings)


def test_config_json_is_deterministic_and_round_trips() -> None:
    kf, _ = Kitfile.from_yaml(FULL)
    config = kf.to_config_json()
    doc = json.loads(config)
    assert next(iter(doc)) == "manifestVersion"
    assert list(doc["model"]["parameters"]) == ["epochs", "lr", "mask", "nested"], "sorted keys"
    assert Kitfile.from_config(config).to_config_json() == config
    again, _ = Kitfile.from_yaml(kf.to_yaml())
    assert again.to_config_json() == config


def test_minimal_kitfile_and_unknown_version_warns() -> None:
    kf, warnings = Kitfile.from_yaml("manifestVersion: 1.0.0\n")
    assert kf.layer_specs() == [] and warnings == []
    _, warnings = Kitfile.from_yaml("manifestVersion: '2.0'\n")
    assert "unrecognized manifestVersion" in warnings[0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "manifestVersion: 1.0.0\nmodel:\n  name: m\n  pth: x\n",
            "Kitfile, line 4: unknown key 'pth' in model",
        ),
        ("manifestVersion: 1.0.0\nmodels:\n  path: x\n", "line 2: unknown key 'models'"),
        ("manifestVersion: 1.0.0\ndatasets:\n  name: x\n", "line 2: datasets must be a list"),
        ("manifestVersion: 1.0.0\nmodel:\n  name: [a]\n", "line 3: model.name must be a string"),
        ("manifestVersion: 1.0.0\ncode:\n  - path: /etc/passwd\n", "absolute paths"),
        ("manifestVersion: 1.0.0\ncode:\n  - path: ../outside\n", "outside the context"),
        ("manifestVersion: 1.0.0\ncode:\n  - path: data/../../outside\n", "outside the context"),
        ("manifestVersion: 1.0.0\ncode:\n  - path: 'C:/x'\n", "absolute paths"),
        ("manifestVersion: 1.0.0\ncode:\n  - path: 'a\\\\b'\n", "write paths with '/'"),
        (
            "manifestVersion: 1.0.0\ncode:\n  - path: src\ndocs:\n  - path: ./src/\n",
            "line 5: code[0] and docs[0] use the same path 'src'",
        ),
        ("manifestVersion: 1.0.0\nmodel:\n  path: http://evil/x\n", "HTTP URLs"),
        (
            "manifestVersion: 1.0.0\nmodel: !!python/object/apply:os.system ['id']\n",
            "line 2: YAML tag '!!python/object/apply:os.system' is not allowed",
        ),
        (
            "manifestVersion: 1.0.0\npackage: {name: a}\npackage: {name: b}\n",
            "line 3: duplicate key 'package'",
        ),
        (
            "manifestVersion: 1.0.0\nmodel:\n  path: m\n  digest: sha256:00\n",
            "unknown key 'digest' in model",
        ),
        (
            "manifestVersion: 1.0.0\nmodel:\n  parts:\n    - {path: p, type: 'bad type'}\n",
            "model.parts[0].type",
        ),
        ("manifestVersion: 1.0.0\nmodel:\n  parameters: {n: .nan}\n", "NaN"),
        (
            "manifestVersion: 1.0.0\nmodel:\n  parameters: {n: " + "9" * 5000 + "}\n",
            "cannot be read",
        ),
        ("manifestVersion: 1.0.0\nmodel:\n  <<: {name: a}\n", "merge keys"),
        (
            "manifestVersion: 1.0.0\ndatasets:\n  - {name: d, remoteHash: x, path: d}\n",
            "remoteHash is only applicable",
        ),
        ("manifestVersion: 1.0.0\nmcpServers:\n  - {path: a.mcpb}\n", "must have a name"),
        ("", "the Kitfile is empty"),
        ("[1, 2]\n", "must be a mapping"),
        ("a: [\n", "invalid YAML"),
        (b"\xff\xfe bad", "not UTF-8"),
    ],
)
def test_bad_kitfiles_name_key_and_line(text: str | bytes, expected: str) -> None:
    with pytest.raises(KitfileError) as exc:
        Kitfile.from_yaml(text)
    assert expected in str(exc.value)
    assert exc.value.hint
    assert "\n" not in str(exc.value), "one line"


def test_billion_laughs_is_bounded() -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i, name in enumerate("bcdefghi"):
        prev = "abcdefghi"[i]
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    with pytest.raises(KitfileError, match="alias expansion"):
        Kitfile.from_yaml("\n".join(lines))


def test_model_reference_produces_no_layer() -> None:
    kf, _ = Kitfile.from_yaml("manifestVersion: 1.0.0\nmodel:\n  path: reg.io/org/base:v1\n")
    assert kf.model_reference == "reg.io/org/base:v1"
    assert kf.layer_specs() == []
