"""Captions beside a folder of images: one prompt per image, or a clear error naming what is missing."""
from __future__ import annotations

import json

import pytest

from provlib.captions import CaptionError, conditioning, prompts_for, read_captions


def _folder(tmp_path, names=("a.png", "b.png", "sub/c.png")):
    for n in names:
        (tmp_path / n).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / n).write_bytes(b"")
    return [tmp_path / n for n in names]


def test_csv_and_jsonl_captions_give_one_prompt_per_image(tmp_path):
    files = _folder(tmp_path)
    (tmp_path / "captions.csv").write_text('file_name,text\nb.png,"a photo of a bag, folded"\na.png,a photo of a coat\n'
                                           "sub/c.png,a photo of a dress\n")
    assert prompts_for(files, tmp_path) == ["a photo of a coat", "a photo of a bag, folded", "a photo of a dress"]
    (tmp_path / "captions.csv").unlink()
    (tmp_path / "captions.jsonl").write_text("\n".join(json.dumps({"file_name": f.relative_to(tmp_path).as_posix(),
                                                                   "text": f"caption {i}"})
                                                       for i, f in enumerate(files)) + "\n")
    assert prompts_for(files, tmp_path) == ["caption 0", "caption 1", "caption 2"]
    assert prompts_for(files, tmp_path, prompt="a photo") == ["a photo"] * 3
    assert conditioning(prompts_for(files, tmp_path), "captions.jsonl") == \
        "captions from captions.jsonl: 3 images, 3 distinct prompts"


def test_no_caption_file_is_unconditional(tmp_path):
    files = _folder(tmp_path)
    assert prompts_for(files, tmp_path) is None and conditioning(None).startswith("unconditional")


def test_a_caption_file_that_misses_images_names_them(tmp_path):
    files = _folder(tmp_path)
    (tmp_path / "captions.csv").write_text("file_name,text\na.png,a photo of a coat\n")
    with pytest.raises(CaptionError, match=r"no caption for 2 of the 3 images: b.png, sub/c.png"):
        prompts_for(files, tmp_path)


@pytest.mark.parametrize("name, text, match", [
    ("captions.csv", "file_name,caption\na.png,x\n", "a file_name and a text"),
    ("captions.csv", "file_name,text\na.png,x\na.png,y\n", "captioned twice"),
    ("captions.jsonl", '{"file_name": "a.png", "text": "x"}\n{not json\n', "unreadable caption file"),
])
def test_a_malformed_caption_file_is_refused_naming_it(tmp_path, name, text, match):
    (tmp_path / name).write_text(text)
    with pytest.raises(CaptionError, match=match):
        read_captions(tmp_path / name)


def test_two_caption_files_are_refused(tmp_path):
    files = _folder(tmp_path)
    (tmp_path / "captions.csv").write_text("file_name,text\n")
    (tmp_path / "captions.jsonl").write_text("")
    with pytest.raises(CaptionError, match="both"):
        prompts_for(files, tmp_path)
