"""A handler whose INIT imports a heavier set of standard library modules,
most of them beyond what the base zygote holds (asyncio, sqlite3, the email
and HTTP server packages, archives, ...): declare them in ``preload`` and a
zygote-tree node holds them for every function that asks for the same set."""

import argparse  # noqa: F401
import asyncio  # noqa: F401
import concurrent.futures  # noqa: F401
import email.message  # noqa: F401
import email.mime.multipart  # noqa: F401
import html.parser  # noqa: F401
import http.server  # noqa: F401
import logging.handlers  # noqa: F401
import smtplib  # noqa: F401
import sqlite3
import ssl  # noqa: F401
import statistics
import tarfile  # noqa: F401
import xml.dom.minidom  # noqa: F401
import zipfile  # noqa: F401


def handler(event, context):
    values = event.get("values", [1, 2, 3]) if isinstance(event, dict) else [1, 2, 3]
    return {"median": statistics.median(values), "sqlite": sqlite3.sqlite_version}
