"""Route templates of HTTP triggers, matched like the Functions host (ASP.NET routing) matches them."""

from __future__ import annotations

import pytest

from local.host.routing import Router, compile_route


def match(template: str, path: str) -> dict[str, str] | None:
    return compile_route(template).match(path)


def test_literals_match_case_insensitively_and_ignore_a_trailing_slash():
    assert match("api/health", "/api/health") == {}
    assert match("api/health", "/API/Health/") == {}
    assert match("api/health", "/api/health/more") is None


def test_parameters():
    assert match("api/hello/{name}", "/api/hello/World") == {"name": "World"}
    assert match("api/hello/{name}", "/api/hello") is None
    assert match("api/{a}/x/{b}", "/api/1/x/2") == {"a": "1", "b": "2"}


def test_optional_parameter_and_default():
    assert match("api/items/{id:int}/{detail?}", "/api/items/4") == {"id": "4"}
    assert match("api/items/{id:int}/{detail?}", "/api/items/4/full") == {"id": "4", "detail": "full"}
    assert match("api/page/{n=1}", "/api/page") == {"n": "1"}
    assert match("api/page/{n=1}", "/api/page/3") == {"n": "3"}


def test_catch_all():
    assert match("api/files/{*path}", "/api/files/a/b/c.txt") == {"path": "a/b/c.txt"}
    assert match("api/files/{*path}", "/api/files") == {}


@pytest.mark.parametrize(("constraint", "good", "bad"), [
    ("int", "42", "4.2"),
    ("int", "-7", "seven"),
    ("long", "9000000000", "x"),
    ("bool", "TRUE", "yes"),
    ("alpha", "abc", "ab1"),
    ("guid", "0f8fad5b-d9cb-469f-a165-70867728950e", "not-a-guid"),
    ("double", "1.5e3", "1.5.3"),
    ("minlength(3)", "abc", "ab"),
    ("maxlength(3)", "abc", "abcd"),
    ("length(2,3)", "ab", "a"),
    ("min(10)", "10", "9"),
    ("max(10)", "10", "11"),
    ("range(1,5)", "5", "6"),
    (r"regex(^FAC\d{{2}}$)", "FAC03", "FAC3"),  # literal braces doubled, as in ASP.NET
    ("int:min(5)", "7", "3"),
])
def test_constraints(constraint, good, bad):
    template = f"api/x/{{v:{constraint}}}"
    assert match(template, f"/api/x/{good}") == {"v": good}
    assert match(template, f"/api/x/{bad}") is None


def test_regex_constraint_may_contain_colons():
    assert match(r"api/t/{at:regex(^\d\d:\d\d$)}", "/api/t/10:30") == {"at": "10:30"}


def test_segment_mixing_literals_and_parameters():
    assert match("api/files/{name}.{ext}", "/api/files/report.final.pdf") == {"name": "report", "ext": "final.pdf"}


def test_literal_routes_win_over_parameters_regardless_of_order():
    router = Router([("api/items/{id}", "by-id"), ("api/items/{*rest}", "rest"), ("api/items/new", "new")])
    assert [target for target, _ in router.candidates("/api/items/new")] == ["new", "by-id", "rest"]
    assert [target for target, _ in router.candidates("/api/items/7")] == ["by-id", "rest"]


@pytest.mark.parametrize(("template", "message"), [
    ("api/{a?}/b", "must be last"),
    ("api/{*a}/b", "must be last"),
    ("api/{a:nosuch}", "unknown route constraint"),
    ("api/{a-b}", "not a valid parameter name"),
    ("api//x", "empty segment"),
    ("api/{a", "unbalanced braces"),
    ("api/x}", "unbalanced braces"),
])
def test_invalid_templates(template, message):
    with pytest.raises(ValueError, match=message):
        compile_route(template)
