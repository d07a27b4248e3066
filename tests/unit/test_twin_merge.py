"""The configuration merge (twin_setup.merge): documented semantics, properties, provenance."""

from __future__ import annotations

import copy

from hypothesis import given, settings
from hypothesis import strategies as st

from twin_setup.document import content_hash
from twin_setup.merge import Layer, merge_all, merge_layers, merge_patch

# -- strategies: JSON documents (no nulls: a finished document has none) and patches (nulls delete) --------
KEYS = st.sampled_from(["a", "b", "c", "telemetry", "alerts", "high", "low", "x1"])
SCALARS = st.one_of(st.booleans(), st.integers(-1000, 1000), st.floats(allow_nan=False, allow_infinity=False),
                    st.text(max_size=5))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(KEYS, inner, max_size=4)), max_leaves=12)
DOCS = st.dictionaries(KEYS, VALUES, max_size=5)
PATCH_VALUES = st.recursive(st.one_of(SCALARS, st.none()),
                            lambda inner: st.one_of(st.lists(SCALARS, max_size=3),
                                                    st.dictionaries(KEYS, inner, max_size=4)), max_leaves=12)
PATCHES = st.dictionaries(KEYS, PATCH_VALUES, max_size=5)


def strip_nulls(value):
    if isinstance(value, dict):
        return {k: strip_nulls(v) for k, v in value.items() if v is not None}
    return value


def paths(value, prefix=()):
    if isinstance(value, dict) and value:
        for key, child in value.items():
            yield from paths(child, (*prefix, key))
    else:
        yield prefix


# -- the documented rules ----------------------------------------------------------------------------------
def test_objects_merge_recursively():
    template = {"alerts": {"high": 85.0, "low": -20.0}, "telemetry": {"intervalSeconds": 60}}
    assert merge_patch(template, {"alerts": {"high": 70.0}}) == {
        "alerts": {"high": 70.0, "low": -20.0}, "telemetry": {"intervalSeconds": 60}}


def test_scalars_and_arrays_replace():
    assert merge_patch({"a": [1, 2, 3], "b": 1}, {"a": [9], "b": "x"}) == {"a": [9], "b": "x"}
    assert merge_patch({"a": {"deep": 1}}, {"a": 5}) == {"a": 5}


def test_null_deletes_and_deleting_nothing_is_harmless():
    assert merge_patch({"alerts": {"high": 1, "spike": 2}}, {"alerts": {"spike": None}}) == {"alerts": {"high": 1}}
    assert merge_patch({"a": 1}, {"zzz": None}) == {"a": 1}
    assert merge_patch({"a": {"b": 1}}, {"a": None}) == {}


def test_an_object_landing_on_a_scalar_replaces_it_without_its_nulls():
    assert merge_patch({"a": 1}, {"a": {"b": 2, "c": None}}) == {"a": {"b": 2}}


def test_inputs_are_never_modified_and_results_share_nothing():
    template = {"a": {"b": [1, 2]}, "c": {"d": 1}}
    patch = {"a": {"x": {"y": 1}}}
    before_t, before_p = copy.deepcopy(template), copy.deepcopy(patch)
    result = merge_patch(template, patch)
    result["a"]["b"].append(3)
    result["c"]["d"] = 99
    result["a"]["x"]["y"] = 2
    assert (template, patch) == (before_t, before_p)


def test_layer_order_is_template_then_star_then_type():
    template = {"firmware": {"channel": "stable"}, "alerts": {"high": 1.0}}
    star = {"firmware": {"channel": "pilot"}, "alerts": {"high": 2.0}}
    own = {"alerts": {"high": 3.0}}
    assert merge_all(template, [star, own]) == {"firmware": {"channel": "pilot"}, "alerts": {"high": 3.0}}
    assert merge_all(template, [own, star])["alerts"]["high"] == 2.0  # order matters: later wins


# -- properties -----------------------------------------------------------------------------------------
@given(DOCS)
def test_empty_patch_is_the_identity(doc):
    assert merge_patch(doc, {}) == doc


@given(PATCHES)
def test_patching_nothing_gives_the_patch_without_nulls(patch):
    assert merge_patch({}, patch) == strip_nulls(patch)


@given(DOCS, PATCHES)
def test_a_patch_applied_twice_changes_nothing_more(doc, patch):
    once = merge_patch(doc, patch)
    assert merge_patch(once, patch) == once


@given(DOCS, PATCHES)
def test_null_deletes_every_key_it_names_and_nothing_else(doc, patch):
    result = merge_patch(doc, patch)
    for key, value in patch.items():
        if value is None:
            assert key not in result
        else:
            assert key in result
    for key in doc:
        if key not in patch:
            assert result[key] == doc[key]


@given(DOCS, PATCHES)
def test_a_result_never_contains_null(doc, patch):
    def has_null(value):
        if isinstance(value, dict):
            return any(v is None or has_null(v) for v in value.values())
        return isinstance(value, list) and any(v is None or has_null(v) for v in value)

    assert not has_null(merge_patch(doc, patch))


@given(DOCS, st.dictionaries(KEYS, SCALARS, min_size=1, max_size=4), st.dictionaries(KEYS, SCALARS, max_size=4))
def test_later_layers_win_on_scalar_conflicts(doc, first, second):
    result = merge_all(doc, [first, second])
    for key, value in first.items():
        assert result[key] == second.get(key, value)


@given(DOCS, PATCHES, PATCHES)
def test_provenance_merge_gives_the_same_document(doc, one, two):
    plain = merge_all(doc, [one, two])
    merged = merge_layers([Layer("template", doc), Layer("one", one), Layer("two", two)])
    assert merged.document == plain
    assert set(merged.sources) == set(paths(plain)) - {()}


@given(DOCS)
@settings(max_examples=50)
def test_hash_ignores_key_order_and_sees_every_change(doc):
    reordered = dict(reversed(list(doc.items())))
    assert content_hash(reordered) == content_hash(doc)
    assert content_hash({**doc, "zz-new": 1}) != content_hash(doc)


# -- provenance --------------------------------------------------------------------------------------------
def test_provenance_names_the_layer_of_each_leaf_and_the_deletions():
    merged = merge_layers([
        Layer("template pressure", {"alerts": {"high": 1200.0, "spikeThreshold": 150.0}, "telemetry": {"i": 30}}),
        Layer("override FAC11/*", {"telemetry": {"i": 10}}),
        Layer("override FAC11/pressure", {"alerts": {"high": 1000.0, "spikeThreshold": None}}),
    ])
    assert merged.document == {"alerts": {"high": 1000.0}, "telemetry": {"i": 10}}
    assert merged.sources == {("alerts", "high"): "override FAC11/pressure", ("telemetry", "i"): "override FAC11/*"}
    assert merged.deleted == {("alerts", "spikeThreshold"): "override FAC11/pressure"}


def test_provenance_when_an_override_replaces_a_subtree():
    merged = merge_layers([Layer("t", {"a": {"b": 1, "c": 2}}), Layer("o", {"a": [1]})])
    assert merged.sources == {("a",): "o"}
    merged = merge_layers([Layer("t", {"a": 1}), Layer("o", {"a": {"b": 2}})])
    assert merged.sources == {("a", "b"): "o"}
