"""Regenerate the README's config reference table from the config tree: `python scripts/config_reference.py`."""

from pathlib import Path

from hftraining.config import describe_fields

START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"


def table() -> str:
    rows = ["| key | default | meaning |", "|---|---|---|"]
    rows += [f"| `{key}` | `{default}` | {text} |" for key, default, text in describe_fields()]
    return "\n".join(rows)


def main() -> None:
    readme = Path(__file__).resolve().parents[1] / "README.md"
    text = readme.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{table()}\n{END}{tail}")


if __name__ == "__main__":
    main()
