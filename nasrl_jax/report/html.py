"""report.html: report.md rendered to one self-contained page (plots embedded, no network fetch).

The page is rendered from the very Markdown text of report.md by the `markdown` package (its
`tables` and `md_in_html` extensions), so the two can never say different things. Every
`plots/<name>.png` image is embedded as a data URI; the style sheet is inline; links to the
run's other files (table1.csv, report.json) stay relative. Readable on a laptop screen (a
centred column, tables that scroll sideways when wider) and printable (collapsed details open,
no page break inside a table row or a figure).
"""

import base64
import html
import re

import markdown as markdown_lib

STYLE = """
body { font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: #1d1d1f; max-width: 1100px; margin: 2em auto; padding: 0 1.2em; }
h1 { font-size: 1.7em; border-bottom: 2px solid #ccc; padding-bottom: .2em; }
h2 { font-size: 1.35em; border-bottom: 1px solid #ddd; margin-top: 2em; }
h3 { font-size: 1.1em; margin-top: 1.5em; }
table { border-collapse: collapse; margin: .8em 0; font-size: 13px; display: block;
        overflow-x: auto; max-width: 100%; }
th, td { border: 1px solid #d0d0d0; padding: .25em .55em; text-align: left; vertical-align: top; }
th { background: #f2f4f7; }
tr:nth-child(even) td { background: #fafbfc; }
code { background: #f2f2f2; padding: 0 .25em; border-radius: 3px; font-size: 12px; }
img { max-width: 100%; height: auto; border: 1px solid #e5e5e5; }
details { margin: .6em 0; }
summary { cursor: pointer; color: #0b57d0; }
@media print {
  body { max-width: none; margin: 0; font-size: 11px; }
  details { display: block; }
  details > summary { display: none; }
  table { display: table; font-size: 9px; }
  tr, img { page-break-inside: avoid; }
  h2, h3 { page-break-after: avoid; }
}
"""

_IMAGE = re.compile(r"\]\(plots/([A-Za-z0-9_.-]+)\.png\)")


def _embed(text: str, plots: dict) -> str:
  """Replaces `](plots/<name>.png)` by a data URI of that PNG (unknown names are left alone)."""
  def data_uri(match):
    png = plots.get(match.group(1))
    if png is None:
      return match.group(0)
    return "](data:image/png;base64," + base64.b64encode(png).decode("ascii") + ")"
  return _IMAGE.sub(data_uri, text)


def render(markdown_text: str, plots: dict, title: str = "NASRL report") -> str:
  """The HTML page of a report.

  Args:
    markdown_text: report.md's text.
    plots: {name: PNG bytes} of the images report.md refers to as plots/<name>.png.
    title: the page title.

  Returns:
    One HTML document (str) that needs no other file to show every table and plot.
  """
  text = _embed(markdown_text, plots).replace("<details>", '<details markdown="1">')
  body = markdown_lib.markdown(text, extensions=["tables", "md_in_html"], output_format="html")
  return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
          "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
          f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
          f"{body}\n</body>\n</html>\n")
