"""report.html: the markdown the trainer writes, as one page a browser shows as report.md reads."""

from __future__ import annotations

import base64

import pytest

from trainer.report_html import markdown_to_html


def _body(text, folder, title="t"):
    page = markdown_to_html(text, folder, title=title)
    return page[page.index("<body>\n") + len("<body>\n"):page.index("\n</body>")]


def test_the_page_stands_alone_with_its_title_escaped(tmp_path):
    page = markdown_to_html("Text.", tmp_path, title="Runs <a> & <b>")
    assert page.startswith("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">")
    assert "<title>Runs &lt;a&gt; &amp; &lt;b&gt;</title>" in page
    assert "<style>" in page and "<script" not in page
    assert page.endswith("<p>Text.</p>\n</body></html>\n")


@pytest.mark.parametrize(("markdown", "html"), [
    ("# a < b & c", "<h1>a &lt; b &amp; c</h1>"),
    ("a < b & c", "<p>a &lt; b &amp; c</p>"),
    ("* a < b & c", "<ul><li>a &lt; b &amp; c</li></ul>"),
    ("| x |\n|---|\n| a < b & c |", "<td>a &lt; b &amp; c</td>"),
])
def test_text_is_escaped_everywhere(tmp_path, markdown, html):
    assert html in _body(markdown, tmp_path)


def test_quotes_in_text_stay_as_written(tmp_path):
    """The page's source reads as the markdown: only <, > and & are escaped in text."""
    assert _body('Loss "sparse_cce" won\'t rank.', tmp_path) == '<p>Loss "sparse_cce" won\'t rank.</p>'


def test_code_and_bold_inline(tmp_path):
    assert (_body("Run `trainer report` on **every** seed, *not* one.", tmp_path)
            == "<p>Run <code>trainer report</code> on <strong>every</strong> seed, *not* one.</p>")


@pytest.mark.parametrize("level", [1, 2, 3, 4])
@pytest.mark.parametrize(("text", "html"), [("  Results **now**", "Results <strong>now</strong>"), (" H", "H")])
def test_a_heading_has_its_level(tmp_path, level, text, html):
    assert _body("#" * level + text, tmp_path) == f"<h{level}>{html}</h{level}>"


def test_a_table_has_its_header_and_rows_but_not_the_separator_row(tmp_path):
    body = _body("| arm | accuracy |\n|:---|---:|\n|  CXR+CCE  | **0.91** |\n| ENH+SCCE | 0.88 |\nAfter.", tmp_path)
    assert body == ("<table><thead><tr><th>arm</th><th>accuracy</th></tr></thead>\n<tbody>\n"
                    "<tr><td>CXR+CCE</td><td><strong>0.91</strong></td></tr>\n"
                    "<tr><td>ENH+SCCE</td><td>0.88</td></tr>\n</tbody></table>\n<p>After.</p>")


def test_a_table_of_a_header_only_has_an_empty_body(tmp_path):
    assert _body("| arm |\n|---|", tmp_path) == "<table><thead><tr><th>arm</th></tr></thead>\n<tbody>\n</tbody></table>"


def test_fenced_code_is_shown_verbatim(tmp_path):
    body = _body("```\ntrainer compare --store <s.h5> **x** `y`\n  indented\n```\nAfter.", tmp_path)
    assert body == "<pre>trainer compare --store &lt;s.h5&gt; **x** `y`\n  indented</pre>\n<p>After.</p>"


def test_an_unclosed_fence_runs_to_the_end(tmp_path):
    assert _body("```\na\n# b", tmp_path) == "<pre>a\n# b</pre>"


def test_figures_are_embedded_and_a_missing_one_is_named(tmp_path):
    png = b"\x89PNG\r\n\x1a\n not a real image"
    (tmp_path / "roc.png").write_bytes(png)
    body = _body('![ROC of "CXR"](roc.png) and ![x](gone.png)', tmp_path)
    assert body == (f'<p><img alt="ROC of &quot;CXR&quot;" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
                    " and [missing figure gone.png]</p>")


def test_a_figure_path_is_read_under_the_report_folder(tmp_path, monkeypatch):
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "a.png").write_bytes(b"A")
    (tmp_path / "a.png").write_bytes(b"B")
    monkeypatch.chdir(tmp_path)
    assert base64.b64encode(b"A").decode() in _body("![a](a.png)", tmp_path / "report")


def test_list_items_of_either_marker_and_their_continued_lines(tmp_path):
    body = _body("* **CXR**: flagged.\n  Also: the source.\n  Occlusion: 0.9.\n- **ENH**: fine.\n\nAfter.", tmp_path)
    assert body == ("<ul><li><strong>CXR</strong>: flagged.<br>Also: the source.<br>Occlusion: 0.9.</li>"
                    "<li><strong>ENH</strong>: fine.</li></ul>\n<p>After.</p>")


def test_an_indented_line_continues_the_item_above_it(tmp_path):
    assert _body("* a\n* b\n  more", tmp_path) == "<ul><li>a</li><li>b<br>more</li></ul>"


def test_a_list_ends_where_an_unindented_line_starts(tmp_path):
    assert _body("* a\nb", tmp_path) == "<ul><li>a</li></ul>\n<p>b</p>"


#: A paragraph's line numbers matter to the parser: each case is also tried one line further down.
SHIFTS = pytest.mark.parametrize("above", ["", "\n", "# T\n\n"])


@SHIFTS
@pytest.mark.parametrize("marker", ["* ", "- "])
@pytest.mark.parametrize(("items", "html"), [(["CXR", "ENH"], "<li>CXR</li><li>ENH</li>"), (["CXR"], "<li>CXR</li>")])
@pytest.mark.parametrize("below", ["", "\n\nEnd."])
def test_a_list_right_under_a_paragraph_is_a_list(tmp_path, above, marker, items, html, below):
    body = _body(above + "Verdicts:\n" + "\n".join(marker + item for item in items) + below, tmp_path)
    assert body.endswith("<p>Verdicts:</p>\n<ul>" + html + "</ul>" + ("\n<p>End.</p>" if below else ""))


@SHIFTS
@pytest.mark.parametrize(("text", "html"), [("one\ntwo\nthree\n\nfour", "<p>one two three</p>\n<p>four</p>"),
                                            ("one\ntwo", "<p>one two</p>")])
def test_lines_of_a_paragraph_are_joined(tmp_path, above, text, html):
    assert _body(above + text, tmp_path).endswith(html)
    assert _body(above + text, tmp_path).count("<p>") == html.count("<p>")


@SHIFTS
@pytest.mark.parametrize(("block", "html"), [
    ("# H", "<h1>H</h1>"),
    ("| h |\n|---|", "<table><thead><tr><th>h</th></tr></thead>\n<tbody>\n</tbody></table>"),
    ("```\nc\n```", "<pre>c</pre>"),
])
@pytest.mark.parametrize("below", ["", "\nEnd."])
def test_a_paragraph_ends_where_another_block_starts(tmp_path, above, block, html, below):
    body = _body(f"{above}text\n{block}{below}", tmp_path)
    assert body.endswith(f"<p>text</p>\n{html}" + ("\n<p>End.</p>" if below else ""))


@pytest.mark.parametrize(("last", "html"), [
    ("| h |\n|---|\n| c |", "<tr><td>c</td></tr>\n</tbody></table>"),
    ("```\nno closing fence", "<pre>no closing fence</pre>"),
    ("* a\n  b", "<ul><li>a<br>b</li></ul>"),
    ("last\nlines", "<p>last lines</p>"),
])
def test_a_long_report_ends_in_any_block(tmp_path, last, html):
    """Hundreds of lines (a grid's report.md is long), the last block running to the end of the text."""
    body = _body("\n\n".join(f"Line {k}." for k in range(200)) + "\n\n" + last, tmp_path)
    assert body.count("<p>Line ") == 200 and body.endswith(html)


def test_blank_lines_make_no_empty_paragraphs(tmp_path):
    assert _body("\n\n# H\n\n\nText\n\n", tmp_path) == "<h1>H</h1>\n<p>Text</p>"
