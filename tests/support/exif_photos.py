"""A folder of photos with known capture times: EXIF DateTimeOriginal (with and without an offset) or, for
files without EXIF, a set mtime. Shared by the capture-date tests and the Ray stage tests."""

from __future__ import annotations

import os
from datetime import datetime

from PIL import Image

from tests.support.images import noise_image

# name -> (EXIF DateTimeOriginal, OffsetTimeOriginal); None: no EXIF, the file's mtime is set instead
PHOTOS = {
    "beach-2020.jpg": ("2020:12:31 23:59:59", "+01:00"),
    "beach-2021a.jpg": ("2021:01:01 00:00:00", None),
    "beach-2021b.jpg": ("2021:06:15 12:00:00", "-07:00"),
    "beach-2021c.jpg": ("2021:12:31 23:59:59", None),
    "beach-2022.jpg": ("2022:01:01 00:00:01", None),
    "mtime-2021.png": None,
    "mtime-2023.png": None,
}
MTIMES = {"mtime-2021.png": datetime(2021, 3, 3, 12, 0), "mtime-2023.png": datetime(2023, 5, 5, 12, 0)}
IN_2021 = {"beach-2021a.jpg", "beach-2021b.jpg", "beach-2021c.jpg", "mtime-2021.png"}


def write_photos(folder):
    folder.mkdir(parents=True, exist_ok=True)
    for i, (name, when) in enumerate(PHOTOS.items()):
        img = noise_image(i, 64, 48)
        if when is None:
            img.save(folder / name)
            stamp = MTIMES[name].timestamp()
            os.utime(folder / name, (stamp, stamp))
            continue
        exif = Image.Exif()
        exif[0x010F], exif[0x0110] = "Apple", f"iPhone {i}"
        sub = exif.get_ifd(0x8769)
        sub[0x9003] = when[0]
        if when[1]:
            sub[0x9011] = when[1]
        img.save(folder / name, exif=exif, quality=95)
    return folder
