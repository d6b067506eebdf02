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
def test_a_heading_has_its_level(tmp_path, level):
    assert _body("#" * level + "  Results **now**", tmp_path) == f"<h{level}>Results <strong>now</strong></h{level}>"


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


def test_a_list_ends_where_an_unindented_line_starts(tmp_path):
    assert _body("* a\nb", tmp_path) == "<ul><li>a</li></ul>\n<p>b</p>"


@pytest.mark.parametrize("marker", ["* ", "- "])
def test_a_list_right_under_a_paragraph_is_a_list(tmp_path, marker):
    assert _body(f"Verdicts:\n{marker}CXR\n{marker}ENH", tmp_path) == "<p>Verdicts:</p>\n<ul><li>CXR</li><li>ENH</li></ul>"


def test_lines_of_a_paragraph_are_joined(tmp_path):
    assert _body("one\ntwo\nthree\n\nfour", tmp_path) == "<p>one two three</p>\n<p>four</p>"


@pytest.mark.parametrize(("block", "html"), [
    ("# H", "<h1>H</h1>"),
    ("| h |\n|---|", "<table><thead><tr><th>h</th></tr></thead>\n<tbody>\n</tbody></table>"),
    ("```\nc\n```", "<pre>c</pre>"),
])
def test_a_paragraph_ends_where_another_block_starts(tmp_path, block, html):
    assert _body(f"text\n{block}", tmp_path) == f"<p>text</p>\n{html}"


def test_blank_lines_make_no_empty_paragraphs(tmp_path):
    assert _body("\n\n# H\n\n\nText\n\n", tmp_path) == "<h1>H</h1>\n<p>Text</p>"
