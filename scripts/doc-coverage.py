#!/usr/bin/env python3
"""Lists public and open Swift declarations that have no `///` summary.

usage: scripts/doc-coverage.py [--exclude PATH]... [PATH]...

PATH is a Swift file or a folder searched for *.swift (default: the
documented modules' sources, Sources/MaskCore, Sources/UserProto,
Sources/Locking and Sources/Examples/Protocols). --exclude skips a file or a
folder (repeatable). Prints one line per undocumented declaration,
`path:line: kind name`, then a summary line, and exits 1 if any declaration
lacks a summary, 0 otherwise.

What counts as public:
  - a declaration whose modifiers include `public` or `open`;
  - every `case` of a public enum;
  - every requirement of a public protocol;
  - a member without an access modifier in a `public extension`;
and only where every enclosing type is public (a `public` member of an
internal type is not part of the API). Extensions themselves are not
symbols and need no comment.

What counts as a summary: a `///` line (or the end of a `/** ... */`
block) directly above the declaration; attribute lines (`@inlinable`,
`@discardableResult`, ...) may stand between them, a blank line may not,
and a comment between an attribute and the declaration does not count.

It is a line scanner, not a parser: it understands comments, string
literals (also multi-line and raw), brace nesting and one declaration per
line. A declaration that starts on the same line as its type's opening
brace (`public enum E { case a }`) reports the type only.
"""

import os
import re
import sys

DEFAULT_ROOTS = [
    "Sources/MaskCore",
    "Sources/UserProto",
    "Sources/Locking",
    "Sources/Examples/Protocols",
]

TYPE_KEYWORDS = {"class", "struct", "enum", "actor", "protocol", "extension"}
MEMBER_KEYWORDS = {
    "func",
    "init",
    "deinit",
    "subscript",
    "var",
    "let",
    "case",
    "typealias",
    "associatedtype",
    "macro",
    "operator",
    "precedencegroup",
}
DECL_KEYWORDS = TYPE_KEYWORDS | MEMBER_KEYWORDS
ACCESS = {"public", "open", "package", "internal", "fileprivate", "private"}
MODIFIERS = ACCESS | {
    "static",
    "class",  # `class func`; told apart from `class Name` below
    "final",
    "override",
    "mutating",
    "nonmutating",
    "convenience",
    "required",
    "indirect",
    "lazy",
    "weak",
    "unowned",
    "nonisolated",
    "dynamic",
    "optional",
    "prefix",
    "postfix",
    "infix",
    "consuming",
    "borrowing",
    "distributed",
    "isolated",
    "sending",
}


def strip_code(lines):
    """Yields (code, doc) per line: the line without comments and string
    contents, and whether the line is (part of) a doc comment."""
    in_block = 0  # nesting depth of /* */
    block_is_doc = False
    in_string = None  # None, '"', or '"""' (with raw hashes as a prefix count)
    raw_hashes = 0
    for line in lines:
        out = []
        doc = False
        i = 0
        n = len(line)
        if in_block:
            doc = block_is_doc
        stripped = line.lstrip()
        if not in_block and in_string is None and stripped.startswith("///"):
            yield "", True
            continue
        while i < n:
            if in_block:
                if line.startswith("*/", i):
                    in_block -= 1
                    i += 2
                    continue
                if line.startswith("/*", i):
                    in_block += 1
                    i += 2
                    continue
                i += 1
                continue
            if in_string is not None:
                close = in_string + "#" * raw_hashes
                if raw_hashes == 0 and line[i] == "\\":
                    i += 2
                    continue
                if line.startswith(close, i):
                    out.append('"')
                    i += len(close)
                    in_string = None
                    raw_hashes = 0
                    continue
                i += 1
                continue
            c = line[i]
            if line.startswith("//", i):
                break
            if line.startswith("/*", i):
                in_block = 1
                block_is_doc = line.startswith("/**", i) and not line.startswith("/**/", i)
                if block_is_doc and not "".join(out).strip():
                    doc = True
                i += 2
                continue
            m = re.match(r'(#*)("""|")', line[i:])
            if m and (c == '"' or c == "#"):
                raw_hashes = len(m.group(1))
                in_string = m.group(2)
                out.append('"')
                i += len(m.group(0))
                continue
            out.append(c)
            i += 1
        if in_string == '"':  # a single-line string cannot span lines
            in_string = None
            raw_hashes = 0
        code = "".join(out)
        # The line that closes a /** */ block counts as doc when nothing follows.
        if doc and code.strip():
            doc = False
        yield code, doc


TOKEN = re.compile(r"@[A-Za-z_][A-Za-z0-9_]*(?:\([^()]*(?:\([^()]*\)[^()]*)*\))?|[A-Za-z_][A-Za-z0-9_]*(?:\([a-z]+\))?|\S")


def parse_decl(code):
    """Returns (modifiers, keyword, name) if the line starts a declaration."""
    tokens = TOKEN.findall(code)
    mods = []
    i = 0
    while i < len(tokens) and tokens[i].startswith("@"):
        i += 1
    while i < len(tokens):
        t = tokens[i]
        base = t.split("(")[0]
        if base == "class" and i + 1 < len(tokens) and tokens[i + 1] not in MODIFIERS | MEMBER_KEYWORDS:
            break  # `class Name`: the type keyword
        if base in MODIFIERS:
            mods.append(t)
            i += 1
            continue
        break
    if i >= len(tokens) or tokens[i] not in DECL_KEYWORDS:
        return None
    keyword = tokens[i]
    rest = tokens[i + 1 :]
    name = rest[0] if rest else ""
    if keyword == "init" or keyword == "subscript":
        name = keyword
    if keyword in ("var", "let", "case") and name == "(":
        name = "(tuple)"
    return mods, keyword, name


def access_of(mods):
    for m in mods:
        if m in ACCESS:
            return m
    return None


class Scope:
    def __init__(self, kind, public, implicit_public):
        self.kind = kind  # a TYPE_KEYWORDS member, or "code" for any other brace
        self.public = public  # members here may be public at all
        self.implicit_public = implicit_public  # members without a modifier are public


def scan(path):
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    missing = []
    total = 0
    stack = [Scope("file", True, False)]
    pending = None  # the scope a type declaration opens at its next `{`
    prev_doc = False  # the last non-attribute line was a doc comment
    after_attribute = False  # an attribute line came since the last declaration
    for number, (code, doc) in enumerate(strip_code(lines), start=1):
        text = code.strip()
        if doc:
            # A doc comment between an attribute and its declaration is not
            # the declaration's: Swift attaches the comment before the
            # attributes.
            prev_doc = not after_attribute
            continue
        if not text:
            prev_doc = False
            after_attribute = False
            continue
        top = stack[-1]
        decl = parse_decl(text) if top.kind != "code" else None
        is_attribute_only = text.startswith("@") and decl is None and re.fullmatch(r"(@\S+(\([^)]*\))?\s*)+", text)
        if decl:
            mods, keyword, name = decl
            access = access_of(mods)
            if keyword == "case":
                public = top.kind == "enum" and top.public
            elif keyword == "extension":
                public = False
            elif top.kind == "protocol":
                public = top.public
            elif access in ("public", "open"):
                public = top.public
            elif access is None:
                public = top.implicit_public
            else:
                public = False
            if public:
                total += 1
                if not prev_doc:
                    missing.append((number, keyword, name))
            if keyword in TYPE_KEYWORDS:
                if keyword == "extension":
                    pending = Scope("extension", True, access == "public")
                else:
                    pending = Scope(keyword, public, False)
        for ch in code:
            if ch == "{":
                stack.append(pending if pending else Scope("code", False, False))
                pending = None
            elif ch == "}":
                if len(stack) > 1:
                    stack.pop()
        if is_attribute_only:
            after_attribute = True
        else:
            prev_doc = False
            after_attribute = False
    return total, missing


def swift_files(paths, excludes):
    excluded = [os.path.normpath(e) for e in excludes]

    def skip(p):
        p = os.path.normpath(p)
        return any(p == e or p.startswith(e + os.sep) for e in excluded)

    for root in paths:
        if os.path.isfile(root):
            if not skip(root):
                yield root
            continue
        for d, dirs, files in os.walk(root):
            dirs.sort()
            for f in sorted(files):
                p = os.path.join(d, f)
                if f.endswith(".swift") and not skip(p):
                    yield p


def main(argv):
    paths, excludes = [], []
    args = iter(argv)
    for a in args:
        if a == "--exclude":
            excludes.append(next(args, ""))
        elif a.startswith("--exclude="):
            excludes.append(a.split("=", 1)[1])
        elif a in ("-h", "--help"):
            print(__doc__)
            return 0
        else:
            paths.append(a)
    if not paths:
        here = os.path.dirname(os.path.abspath(__file__))
        os.chdir(os.path.dirname(here))
        paths = DEFAULT_ROOTS
    grand_total = 0
    undocumented = 0
    files = 0
    for path in swift_files(paths, excludes):
        files += 1
        total, missing = scan(path)
        grand_total += total
        undocumented += len(missing)
        for number, keyword, name in missing:
            print(f"{path}:{number}: {keyword} {name}")
    documented = grand_total - undocumented
    print(f"doc coverage: {documented}/{grand_total} public declarations documented in {files} files, {undocumented} missing")
    return 1 if undocumented else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
