#!/usr/bin/env python3
"""test_sync_auth.py again with loop_threads = 4 (GH_LOOP_THREADS, read by ghtest.Server):
upstream pass-through binds complete on other loops than the one that asked."""
import os
import sys

os.environ["GH_LOOP_THREADS"] = "4"
here = os.path.dirname(os.path.abspath(__file__))
os.execv(sys.executable, [sys.executable, os.path.join(here, "test_sync_auth.py")] + sys.argv[1:])
