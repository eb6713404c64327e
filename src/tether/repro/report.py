"""Reports a CI job reads: JUnit XML (one test case per output and metric, so a CI
page shows which one diverged) next to the JSON of ``Reproduction.to_json``."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from tether.repro.reproduce import Reproduction
from tether.repro.verify import FAILED, UNVERIFIED


def junit_xml(result: Reproduction) -> bytes:
    run = result.plan.run
    label = run.name or run.id[:12]
    suite = ET.Element(
        "testsuite",
        name=f"tether.reproduce.{label}",
        timestamp=_iso(run.started),
        time=f"{result.duration:.3f}",
    )
    cases: list[tuple[str, str, str | None]] = []  # (name, classname, failure message)
    v = result.verification
    if v.verdict == FAILED:
        cases.append(("run", "run", v.reason))
    else:
        cases.append(("run", "run", None))
    if v.verdict == UNVERIFIED:
        cases.append(("evidence", "run", v.reason))
    for o in v.outputs:
        failure = None
        if o.status == "missing":
            failure = "not produced"
        elif o.status == "differs" and not v.reproduced:
            failure = f"digest {o.actual} != recorded {o.expected}"
        cases.append((o.path, "outputs", failure))
    for m in v.metrics:
        failure = None
        if m.status in ("outside", "missing"):
            failure = (
                "missing from the reproduction"
                if m.status == "missing"
                else f"{m.actual!r} vs recorded {m.expected!r} (tolerance {m.tolerance or 'exact'})"
                + (f"; {m.detail}" if m.detail else "")
            )
        cases.append((m.key, "metrics", failure))
    failures = 0
    for name, classname, failure in cases:
        case = ET.SubElement(suite, "testcase", name=name, classname=f"{label}.{classname}")
        if failure is not None:
            failures += 1
            ET.SubElement(case, "failure", message=failure, type=v.verdict).text = failure
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    props = ET.SubElement(suite, "properties")
    for key, value in (
        ("verdict", v.verdict),
        ("reason", v.reason),
        ("original", run.id),
        ("reproduction", result.run_id),
        ("env_mode", result.plan.env_mode),
    ):
        ET.SubElement(props, "property", name=key, value=value)
    suite.insert(0, suite[-1])  # properties first, as the schema orders them
    del suite[-1]
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    text: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return text + b"\n"


def _iso(ts: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
