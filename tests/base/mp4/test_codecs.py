"""RFC 6381 codec strings of real encodes (what a MediaSource is created with)."""

from __future__ import annotations

import re

from nvr.base.mp4 import parse_segment
from nvr.base.mp4.codecs import codec_string, mime_type


def _init(made, name):
    return parse_segment(made[name][0].data).init


def test_h264_names_its_profile_constraints_and_level(made):
    init = _init(made, "h264")
    code = codec_string(init.lead)
    # libx264 with B-frames writes High profile (100 = 0x64); the level byte follows the constraint byte.
    assert re.fullmatch(r"avc1\.64[0-9a-f]{2}[0-9a-f]{2}", code), code
    assert mime_type(init) == f'video/mp4; codecs="{code}"'


def test_hevc_names_profile_compatibility_tier_and_level(made):
    code = codec_string(_init(made, "hevc").lead)
    # Main profile (1), its compatibility flags (reversed: 6 = Main and Main 10), main tier, a level.
    assert re.fullmatch(r"(hvc1|hev1)\.1\.6\.L\d+(\.[0-9a-f]{1,2})*", code), code


def test_aac_is_mpeg4_audio_low_complexity(made):
    init = _init(made, "av")
    audio = next(t for t in init.tracks if t.handler == "soun")
    assert codec_string(audio) == "mp4a.40.2"
    assert mime_type(init).count(",") == 1


def test_a_codec_without_an_mse_string_is_named_by_its_fourcc(made):
    assert codec_string(_init(made, "mjpeg").lead) == "mp4v"
