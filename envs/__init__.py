"""Gymnasium environments and wrappers registered under ``mmssl/...`` ids."""
