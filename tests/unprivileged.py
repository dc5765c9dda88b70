"""`unprivileged()`: folder and file permissions apply to this thread even when the tests run as root.

Root passes every permission check through two capabilities (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH).
Inside the context they are cleared from the calling thread's effective set, kept in its permitted
set, and put back on exit, so a test can make a folder read-only and see what a user sees. Not
root: nothing to do. Where the capabilities cannot be changed, the test is skipped.
"""
from __future__ import annotations

import contextlib
import ctypes
import os

import pytest

_VERSION_3 = 0x20080522
_DAC = (1 << 1) | (1 << 2)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _caps(libc, data=None):
    header = _Header(_VERSION_3, 0)
    if data is None:
        data = (_Data * 2)()
        if libc.capget(ctypes.byref(header), data) != 0:
            raise OSError(ctypes.get_errno(), "capget")
        return data
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset")
    return data


@contextlib.contextmanager
def unprivileged():
    if os.geteuid() != 0:
        yield
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        saved = _caps(libc)
        dropped = (_Data * 2)(*[_Data(d.effective, d.permitted, d.inheritable) for d in saved])
        dropped[0].effective &= ~_DAC
        _caps(libc, dropped)
    except (OSError, AttributeError) as e:
        pytest.skip(f"cannot drop root's file-permission override here ({e})")
    try:
        yield
    finally:
        _caps(libc, saved)

