"""Video files and layouts: read/write mp4 and gif, uint8 <-> [-1, 1] tensors, grids."""

from kinema.video.io import (
    WRITE_SUFFIXES,
    VideoReadError,
    from_uint8,
    make_grid,
    probe_num_frames,
    read_video,
    save_video_grid,
    to_uint8,
    write_video,
)

__all__ = [
    "WRITE_SUFFIXES",
    "VideoReadError",
    "from_uint8",
    "make_grid",
    "probe_num_frames",
    "read_video",
    "save_video_grid",
    "to_uint8",
    "write_video",
]
