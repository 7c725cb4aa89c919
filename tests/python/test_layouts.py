"""`osteonet check-data`: the example folder of every task passes; one broken copy per rule of its layout
gives one line naming the file and the field (exit status 2) and writes nothing."""

import csv
import json
import os
import shutil

import numpy as np
import pytest

from osteonet.cli import main

TASKS = ("classification", "detection", "ovf", "segmentation", "bmd", "hip")


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    base = tmp_path_factory.mktemp("examples")
    for task in TASKS:
        assert main(["synth", "--example", task, "--out", str(base / task)]) == 0
    return base


def _rows(folder):
    with open(os.path.join(folder, "manifest.csv"), newline="") as f:
        return list(csv.DictReader(f))


def _write_rows(folder, rows, columns=None):
    columns = columns or list(rows[0])
    with open(os.path.join(folder, "manifest.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def edit_row(field, value, row=1):
    def f(folder):
        rows = _rows(folder)
        rows[row][field] = value
        _write_rows(folder, rows)
    return f


def drop_column(field):
    def f(folder):
        rows = _rows(folder)
        _write_rows(folder, rows, [c for c in rows[0] if c != field])
    return f


def all_rows(field, value):
    def f(folder):
        rows = _rows(folder)
        for r in rows:
            r[field] = value
        _write_rows(folder, rows)
    return f


def write_file(name, text):
    def f(folder):
        with open(os.path.join(folder, name), "w") as fh:
            fh.write(text)
    return f


def remove(name):
    def f(folder):
        p = os.path.join(folder, name)
        shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)
    return f


def coco_edit(fn):
    def f(folder):
        path = os.path.join(folder, "annotations.json")
        coco = json.load(open(path))
        fn(coco)
        json.dump(coco, open(path, "w"))
    return f


def png(name_field, size=None, values=None, row=1):
    """Replaces the file a row names by a PNG of another size or other values."""
    def f(folder):
        from PIL import Image

        r = _rows(folder)[row]
        path = os.path.join(folder, r[name_field])
        arr = np.asarray(Image.open(path))
        if size is not None:
            arr = np.zeros(size, dtype=np.uint8)
        if values is not None:
            arr = arr.copy()
            arr[:2, :2] = values
        Image.fromarray(arr).save(path)
    return f


def nifti_pair(kind):
    """Row 1 becomes a NIfTI image/mask pair with a 2-D image (kind="flat"), a fractional mask
    (kind="float") or a mask of another shape (kind="shape")."""
    def f(folder):
        import nibabel as nib

        rows = _rows(folder)
        img = np.random.default_rng(0).normal(size=(6, 8, 5)).astype(np.float32)
        mask = np.zeros((6, 8, 5), np.float32)
        if kind == "float":
            mask[1, 1, 1] = 0.5
        if kind == "shape":
            mask = np.zeros((6, 8, 4), np.float32)
        column = "path" if "path" in rows[1] and "image" not in rows[1] else "image"
        if kind == "flat":
            img = img[:, :, 0]
        nib.save(nib.Nifti1Image(img, np.eye(4)), os.path.join(folder, "v.nii.gz"))
        nib.save(nib.Nifti1Image(mask, np.eye(4)), os.path.join(folder, "m.nii.gz"))
        rows[1][column] = "v.nii.gz"
        rows[1]["mask"] = "m.nii.gz"
        _write_rows(folder, rows, list(rows[0]) + ([] if "mask" in rows[0] else ["mask"]))
    return f


def first_label_only(folder):
    rows = _rows(folder)
    _write_rows(folder, [r for r in rows if r["label"] == rows[0]["label"]])


CASES = [
    # (task, rule, mutation, expected part of the one-line error)
    ("classification", "folder", lambda d: shutil.rmtree(d), "data folder not found"),
    ("classification", "manifest", remove("manifest.csv"), "manifest.csv: manifest (the classification layout needs columns path, label) not found"),
    ("classification", "column", drop_column("label"), "missing column(s) ['label']"),
    ("classification", "rows", lambda d: _write_rows(d, [], ["path", "label"]), "manifest has no rows"),
    ("classification", "empty field", edit_row("label", ""), "manifest.csv line 3: field 'label' is empty"),
    ("classification", "missing file", edit_row("path", "images/none.png"), "line 3: field 'path' names 'images/none.png', which does not exist"),
    ("classification", "unreadable", lambda d: open(os.path.join(d, _rows(d)[0]["path"]), "w").write("text"), "not an image PIL can read"),
    ("classification", "classes", first_label_only, "field 'label' needs at least 2 classes, got ['normal']"),
    ("classification", "group id", edit_row("patient_id", ""), "line 3: field 'patient_id' is empty"),
    ("classification", "fields", lambda d: open(os.path.join(d, "manifest.csv"), "a").write("a,b,c,d,e,f,g\n"), "line 14: expected 5 fields"),
    ("classification", "size", png("path", size=(4, 4)), "names a 4x4 image; expected at least 8 x 8 pixels"),
    ("detection", "annotations", remove("annotations.json"), "annotations.json: not found"),
    ("detection", "json", write_file("annotations.json", "{not json"), "not valid JSON"),
    ("detection", "categories", coco_edit(lambda c: c.pop("categories")), "needs a list 'categories'"),
    ("detection", "image id", coco_edit(lambda c: c["annotations"][0].update(image_id=999)), "unknown image_id=999"),
    ("detection", "category", coco_edit(lambda c: c["annotations"][0].update(category_id=9)), "unknown category_id=9"),
    ("detection", "bbox outside", coco_edit(lambda c: c["annotations"][0].update(bbox=[500, 500, 40, 40])), "bbox lies outside the 512x512 image"),
    ("detection", "bbox area", coco_edit(lambda c: c["annotations"][0].update(bbox=[10, 10, 0, 5])), "positive width and height"),
    ("detection", "image file", coco_edit(lambda c: c["images"][0].update(file_name="png/none.png")), "none.png: no such file"),
    ("detection", "image size", coco_edit(lambda c: c["images"][0].update(width=600)), "the annotations say 600x512"),
    ("ovf", "label", edit_row("label", "broken"), "field 'label' must be fracture, no_fracture, 1 or 0, got label='broken'"),
    ("ovf", "volume", lambda d: (open(os.path.join(d, "x.png"), "w").write("x"), edit_row("path", "x.png")(d)), "field 'path' must name a CT volume"),
    ("ovf", "classes", all_rows("label", "fracture"), "needs both fracture and no_fracture scans"),
    ("ovf", "3-D", nifti_pair("flat"), "expected a 3-D CT volume"),
    ("ovf", "mask shape", nifti_pair("shape"), "m.nii.gz: the mask is"),
    ("segmentation", "mask size", png("mask", size=(48, 48)), "field 'mask' names a 1x48x48 mask for a 1x96x96 image"),
    ("segmentation", "mask values", png("mask", values=7), "mask values [7] are not in labels.csv"),
    ("segmentation", "label table columns", write_file("labels.csv", "value,label\n0,background\n"), "labels.csv: missing column(s) ['name']"),
    ("segmentation", "label table values", write_file("labels.csv", "value,name\n0,background\n1,a\n1,b\n"), "labels.csv line 4: field 'value' repeats value=1"),
    ("segmentation", "label table background", write_file("labels.csv", "value,name\n1,a\n2,b\n"), "needs the background row (value 0)"),
    ("segmentation", "label table number", write_file("labels.csv", "value,name\n0,background\nx,a\n"), "line 3: field 'value' must be an integer"),
    ("segmentation", "default table", remove("labels.csv"), "are not in the default table (0 background, 1 foreground; write labels.csv)"),
    ("segmentation", "whole numbers", nifti_pair("float"), "m.nii.gz: a mask must hold whole numbers"),
    ("bmd", "bmd number", edit_row("bmd", "abc"), "field 'bmd' must be a number of trabecular BMD in mg/cm³ between 1 and 400, got bmd='abc'"),
    ("bmd", "bmd units", edit_row("bmd", "0.93"), "got bmd='0.93'"),
    ("bmd", "slices", nifti_pair("none"), "field 'image' names a volume; the bmd layout takes one axial slice per row"),
    ("bmd", "one label", write_file("labels.csv", "value,name\n0,background\n255,body\n128,disc\n"), "one label besides the background"),
    ("hip", "label table", write_file("labels.csv", "value,name\n0,background\n1,neck\n"), "the hip layout's labels are"),
    ("hip", "target column", lambda d: (drop_column("t_score")(d), drop_column("label")(d)), "missing column 't_score' or 'label'"),
    ("hip", "WHO class", edit_row("label", "severe"), "field 'label' must be one of ['normal', 'osteopenia', 'osteoporosis']"),
    ("hip", "label vs t-score", edit_row("t_score", "-3.0"), "disagrees with t_score=-3.0"),
    ("hip", "t-score range", lambda d: (all_rows("label", "")(d), edit_row("t_score", "-30")(d)), "field 't_score' must be a number of SD between -8 and 6, got t_score='-30'"),
]


def _snapshot(folder):
    return sorted((os.path.relpath(os.path.join(r, f), folder), os.path.getsize(os.path.join(r, f)),
                   os.path.getmtime(os.path.join(r, f))) for r, _, fs in os.walk(folder) for f in fs)


@pytest.mark.parametrize("task", TASKS)
def test_examples_pass(examples, task, capsys):
    before = _snapshot(examples / task)
    assert main(["check-data", "--task", task, str(examples / task)]) == 0
    assert "valid" in capsys.readouterr().out
    assert _snapshot(examples / task) == before


@pytest.mark.parametrize("task,rule,mutate,expected", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_broken_example_gives_one_line(examples, tmp_path, capsys, task, rule, mutate, expected):
    folder = tmp_path / task
    shutil.copytree(examples / task, folder)
    mutate(str(folder))
    before = _snapshot(folder) if folder.exists() else []
    capsys.readouterr()
    assert main(["check-data", "--task", task, str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("osteonet check-data: error: ") and "\n" not in err, err
    assert expected in err, err
    assert (_snapshot(folder) if folder.exists() else []) == before  # nothing written
