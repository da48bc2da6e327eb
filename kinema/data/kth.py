"""The KTH human actions layout for ``kinema prepare --layout kth``.

KTH (Schuldt, Laptev & Caputo 2004) ships as one archive per action (``boxing``, ``handclapping``,
``handwaving``, ``jogging``, ``running``, ``walking``) of 160x120 greyscale videos at 25 fps named
``personPP_<action>_dS_uncomp.avi`` (25 persons, 4 scenarios). The videos are found anywhere under the
folder (action folders ``walking/person01_walking_d1_uncomp.avi`` as unpacked, or person folders); the
person and action come from the file name, and an action folder that disagrees with it is an error.

Labels are the action's index in :data:`KTH_ACTIONS` (the official ``data/kth.py`` order of
shgaurav1/DVG and of SVG), the group is the person. Splits (``--split``):

- ``train`` / ``test``: persons 1-20 / 21-25, the split of DVG's and SVG's KTH loader
  (``data/kth.py:22-25`` of shgaurav1/DVG at e882473), so results compare with DVG's paper;
- ``mcnet_train`` / ``mcnet_test``: persons 1-16 / 17-25 (Villegas et al.'s MCnet split, used by other
  prediction papers).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from kinema.data.folder import VIDEO_EXTENSIONS, DatasetError, find_files
from kinema.data.ucf101 import VideoEntry

__all__ = ["KTH_ACTIONS", "KTH_SPLITS", "kth_videos"]

KTH_ACTIONS = ("boxing", "handclapping", "handwaving", "jogging", "running", "walking")
KTH_SPLITS: dict[str, range] = {"train": range(1, 21), "test": range(21, 26),
                                "mcnet_train": range(1, 17), "mcnet_test": range(17, 26)}
KTH_NAME = re.compile(r"^person(?P<person>\d+)_(?P<action>[a-z]+)_d(?P<scenario>\d+)(?:_uncomp)?\.[a-z0-9]+$",
                      re.IGNORECASE)
EXPECTED = ("expected the KTH layout: videos named personPP_<action>_dS_uncomp.avi (action one of "
            f"{', '.join(KTH_ACTIONS)}), e.g. in action folders walking/person01_walking_d1_uncomp.avi")


def kth_videos(root: str | os.PathLike, split: str | None = None) -> tuple[Path, list[VideoEntry]]:
    """``(root, entries)`` of the KTH videos under ``root`` (sorted by path), those of ``split``'s persons
    (None: all). Raises FileNotFoundError / DatasetError naming the problem."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"--data {root} is not a folder; {EXPECTED}")
    if split is not None and split not in KTH_SPLITS:
        raise DatasetError(f"--split {split!r} is not a KTH split; choose one of {', '.join(KTH_SPLITS)} "
                           "(train/test: persons 1-20 / 21-25 as DVG and SVG; mcnet_*: persons 1-16 / 17-25)")
    files = [p.relative_to(root).as_posix() for p in find_files(root, VIDEO_EXTENSIONS, skip_hidden=True)]
    if not files:
        raise DatasetError(f"no video files under {root}; {EXPECTED}")
    persons = KTH_SPLITS[split] if split is not None else None
    entries = []
    for rel in files:
        match = KTH_NAME.match(rel.rsplit("/", 1)[-1])
        if match is None:
            raise DatasetError(f"{root / rel}: not a KTH file name; {EXPECTED}. Move other videos out of --data")
        action, person = match["action"].lower(), int(match["person"])
        if action not in KTH_ACTIONS:
            raise DatasetError(f"{root / rel}: unknown KTH action {action!r}; {EXPECTED}")
        folders = [part.lower() for part in rel.split("/")[:-1]]
        wrong = [f for f in folders if f in KTH_ACTIONS and f != action]
        if wrong:
            raise DatasetError(f"{root / rel}: a {action} video in the {wrong[0]}/ folder; check the unpacked archives")
        if persons is None or person in persons:
            entries.append(VideoEntry(rel, KTH_ACTIONS.index(action), action, person))
    if not entries:
        raise DatasetError(f"no KTH video of split {split!r} (persons {persons.start}-{persons.stop - 1}) under {root}")
    return root, entries
