"""Class names reach terminals (predict's table) and Markdown (a bundle's model card): a
model file's names may hold no control characters, and the card lets no HTML tag open."""

from __future__ import annotations

import pytest

from fmnist.errors import RunError
from fmnist.models.saved import check_class_names
from fmnist.reports.model_card import cell


@pytest.mark.parametrize("name", ["\x1b[2J\x1b[31mPWN", "fake\rrow", "two\nlines", "right\u202eto-left", "bell\x07"])
def test_names_with_control_characters_are_refused(name: str):
    with pytest.raises(RunError, match="printable"):
        check_class_names(["ok", name])


def test_printable_names_in_any_script_pass():
    assert check_class_names(["T-shirt/top", "Größe 40", "靴", "a | b"]) == ["T-shirt/top", "Größe 40", "靴", "a | b"]


def test_a_card_cell_opens_no_html_tag_and_stays_one_cell():
    text = cell("<img src=x onerror=alert(1)> | next\r\nrow")
    assert "<" not in text and "\n" not in text and "\r" not in text
    assert "\\|" in text
