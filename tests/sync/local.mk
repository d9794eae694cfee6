# tests/sync
