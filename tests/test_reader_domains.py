"""Every value outside its domain (issue 14): a FlowDataError naming file, line, column, expected and got under
bad_records=error, a counted skip under bad_records=skip, a counted malformed record in the gateway; never a
traceback. Also CR-only line ends (read), compressed files (a clear error) and unknown attack families (kept,
counted in the table's notes)."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import zipfile
from collections import Counter
from pathlib import Path

import pytest
from test_readers import (ROW_ATTACK, ROW_NORMAL, UNSW_HEADER, ZEEK_CSV_HEADER, ZEEK_CSV_ROW, ZEEK_HEADER, ZEEK_ROW,
                          raw_row, unsw_file, write)  # fmt: skip

from flows.errors import FlowDataError
from flows.normalise.unsw import NUMERIC
from flows.pipeline import FeaturePipeline, PipelineConfig
from flows.readers import read_iot23_conn_log, read_unsw_partitioned, read_unsw_raw
from flows.schema import IOT23_NUMERIC, UNSW_RAW_PUBLISHED_NAMES, unsw_canonical_name
from gateway.encode import encode_batch
from gateway.sources import FlowSource, SourceError

RAW_NAMES = [unsw_canonical_name(n) for n in UNSW_RAW_PUBLISHED_NAMES]
ZEEK_NAMES = ZEEK_HEADER.splitlines()[-1].replace("   ", "\t").split("\t")[1:]
ZEEK_GOOD = ZEEK_ROW.format(dur="3.1", label="Malicious", family="DDoS")


def edited(line: str, names: list[str], sep: str, **cells: str) -> str:
    """``line`` with the named cells replaced (Zeek's last three fields are space-separated)."""
    values = line.replace("   ", sep).split(sep)
    for name, value in cells.items():
        values[names.index(name)] = value
    return sep.join(values)


def partitioned(tmp_path: Path, **cells: str) -> Path:
    return unsw_file(tmp_path, [ROW_NORMAL, edited(ROW_ATTACK, UNSW_HEADER.split(","), ",", **cells)])


def raw(tmp_path: Path, **cells: str) -> Path:
    return write(tmp_path, "UNSW-NB15_9.csv", raw_row() + "\n" + edited(raw_row(), RAW_NAMES, ",", **cells) + "\n")


def zeek(tmp_path: Path, **cells: str) -> Path:
    bad = edited(ZEEK_GOOD, ZEEK_NAMES, "\t", **cells)
    return write(tmp_path, "c.conn.log.labeled", ZEEK_HEADER + ZEEK_GOOD + "\n" + bad + "\n")


READERS = {partitioned: read_unsw_partitioned, raw: read_unsw_raw, zeek: read_iot23_conn_log}
BAD_LINE = {partitioned: 3, raw: 2, zeek: 8}  # the edited record's line in each file


def reader_for(path: Path):
    """The batch reader of a test file, by its name."""
    if path.name.endswith(("labeled", "labeled.csv", ".log")):
        return read_iot23_conn_log
    return read_unsw_raw if path.name.startswith("UNSW-NB15_") else read_unsw_partitioned


def gateway(path: Path, fit_on: Path) -> tuple[int, Counter]:
    """(records scored, malformed counts) of ``path`` through FlowSource -> encode_batch with a pipeline fitted on
    the reader's table of ``fit_on``."""
    table = reader_for(fit_on)(fit_on, bad_records="skip")
    state = FeaturePipeline(PipelineConfig(min_category_count=1)).fit(table).state_
    source = FlowSource(path)
    malformed: Counter = Counter()
    encoded = encode_batch([r for r in source if r is not None], state, malformed)
    return len(encoded.records), malformed + source.stats.malformed


def check(builder, tmp_path: Path, reason: str, message: str, served_as: str | None = None, **cells: str) -> None:
    """The edited record: a located error, a skip counted under ``reason``, a malformed record in the gateway
    (counted under ``served_as``, default ``reason``)."""
    path = builder(tmp_path, **cells)
    read = READERS[builder]
    with pytest.raises(FlowDataError) as err:
        read(path)
    column = next(iter(cells))
    assert f"{path.name}:{BAD_LINE[builder]}: {message}; column '{column}'; expected " in str(err.value)
    assert err.value.line == BAD_LINE[builder] and err.value.column == column
    assert err.value.got == cells[column].strip('"')
    table = read(path, bad_records="skip")
    assert len(table) == 1 and table.skipped == {reason: 1}
    good = builder(tmp_path / "good", **{column: cell for column, cell in zip(cells, _good_cells(builder, cells))})
    scored, malformed = gateway(path, good)
    assert scored == 1 and malformed == Counter({served_as or reason: 1})


def _good_cells(builder, cells: dict[str, str]) -> list[str]:
    """The template's own values of the edited cells."""
    template, names, sep = {partitioned: (ROW_ATTACK, UNSW_HEADER.split(","), ","), raw: (raw_row(), RAW_NAMES, ","),
                            zeek: (ZEEK_GOOD, ZEEK_NAMES, "\t")}[builder]  # fmt: skip
    values = template.replace("   ", sep).split(sep)
    return [values[names.index(c)] for c in cells]


@pytest.fixture(autouse=True)
def _good_dir(tmp_path):
    """Where :func:`check` writes the unedited file its gateway pipeline is fitted on."""
    (tmp_path / "good").mkdir()


# ---- a 10 MB field -------------------------------------------------------------------------------------
@pytest.mark.parametrize("quoted", [False, True], ids=["unquoted", "quoted"])
@pytest.mark.parametrize("column", ["proto", "dur"])
def test_a_10_mb_field_is_a_located_error_or_a_counted_skip(tmp_path, quoted, column):
    """Before: a quoted one raised the csv module's 'field larger than field limit'; an unquoted categorical one
    was read as a category (and many rows of it would ask numpy for n x 10 MB x 4 bytes)."""
    huge = ("7" if column == "dur" else "x") * 10_000_000
    check(partitioned, tmp_path, "field_too_long", "field too long", **{column: f'"{huge}"' if quoted else huge})


def test_a_10_mb_field_in_a_zeek_log(tmp_path):
    check(zeek, tmp_path, "field_too_long", "field too long", history="S" * 10_000_000)


# ---- ports ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["80.5", "1e3", "+80", "65536", "0x10000",
                                   pytest.param("0x" + "f" * 400, id="0x-400-f"), "0x1_0", "8 0", "-1"])  # fmt: skip
@pytest.mark.parametrize("column", ["src_port", "dst_port"])
def test_a_bad_raw_unsw_port(tmp_path, column, value):
    """Before: 0x + 400 hex digits raised OverflowError; 1e3 and +80 were read as ports; the gateway kept
    every record with a bad port."""
    check(raw, tmp_path, "bad_port", "bad port", **{column: value})


@pytest.mark.parametrize("value", ["abc", "-7", "99999", "0x50", "1e3", "80.0"])
@pytest.mark.parametrize("column", ["id.orig_p", "id.resp_p"])
def test_a_bad_zeek_port(tmp_path, column, value):
    check(zeek, tmp_path, "bad_port", "bad port", **{column: value})


# ---- numbers: negative, out of range, not whole ---------------------------------------------------------
@pytest.mark.parametrize("column", NUMERIC)
def test_a_negative_partitioned_value(tmp_path, column):
    check(partitioned, tmp_path, "negative_value", "negative value", **{column: "-1"})


@pytest.mark.parametrize("column", [c for c in NUMERIC if c != "rate"] + ["start_time"])
def test_a_negative_raw_value(tmp_path, column):
    check(raw, tmp_path, "negative_value", "negative value", **{column: "-0.5"})


@pytest.mark.parametrize("column", [*IOT23_NUMERIC, "ts"])
def test_a_negative_zeek_value(tmp_path, column):
    check(zeek, tmp_path, "negative_value", "negative value", **{column: "-2"})


@pytest.mark.parametrize("builder, column, value, reason", [
    (partitioned, "sttl", "256", "out_of_range"), (raw, "dttl", "300", "out_of_range"),
    (partitioned, "swin", "65536", "out_of_range"), (raw, "stcpb", "4294967296", "out_of_range"),
    (partitioned, "is_sm_ips_ports", "2", "out_of_range"), (partitioned, "spkts", "2.5", "not_integer"),
    (raw, "sbytes", "10.25", "not_integer"), (zeek, "orig_pkts", "1.5", "not_integer"),
    (zeek, "resp_bytes", "0.5", "not_integer"),
])  # fmt: skip
def test_a_value_above_its_column_maximum_or_not_whole(tmp_path, builder, column, value, reason):
    message = {"out_of_range": "value out of range", "not_integer": "not a whole number"}[reason]
    check(builder, tmp_path, reason, message, **{column: value})


@pytest.mark.parametrize("value", ["1_000", "\u0661\u0662", "12\u00a0"])
def test_numbers_python_reads_but_a_flow_file_never_writes_are_not_numbers(tmp_path, value):
    check(partitioned, tmp_path, "non_numeric_or_non_finite", "non-numeric value", "non_numeric", sbytes=value)


def test_is_ftp_login_2_is_accepted_as_in_the_published_partition(tmp_path):
    assert len(read_unsw_partitioned(partitioned(tmp_path, is_ftp_login="2"))) == 2


# ---- addresses -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["abc", "999.1.1.1", "-", "", "1.2.3", "01.2.3.4", "1.2.3.4/24", "::g"])
def test_a_bad_address(tmp_path, value):
    check(raw, tmp_path, "bad_address", "bad address", src_ip=value)
    check(zeek, tmp_path, "bad_address", "bad address", **{"id.resp_h": value})


@pytest.mark.parametrize("value", ["2001:db8::1", "fe80::1%eth0", "::ffff:10.0.0.1", "0.0.0.0", " 10.1.2.3 "])
def test_ipv4_and_ipv6_addresses_are_accepted(tmp_path, value):
    assert read_unsw_raw(raw(tmp_path, dst_ip=value)).frame["dst_ip"].tolist()[1] == value.strip()
    assert len(read_iot23_conn_log(zeek(tmp_path, **{"id.orig_h": value}))) == 2


# ---- control characters --------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["u\x00dp", "ud\x07p", "udp\x1b", "ud\tp", "u\x85dp", "\x7f", "u\u2028dp"])
def test_control_characters_in_a_categorical_value(tmp_path, value):
    check(partitioned, tmp_path, "control_characters", "control characters in a value", proto=value)
    check(raw, tmp_path, "control_characters", "control characters in a value", state=value)
    if "\t" not in value:  # a tab separates a Zeek log's fields
        check(zeek, tmp_path, "control_characters", "control characters in a value", history=value)


def test_a_control_character_in_a_number_is_not_read_as_whitespace(tmp_path):
    """Before: Python's float read '12\x0c' as 12."""
    check(partitioned, tmp_path, "control_characters", "control characters in a value", dbytes="12\x0c")


# ---- line ends -----------------------------------------------------------------------------------------
def _four_formats(tmp_path: Path, end: str) -> dict[str, Path]:
    zeek_csv = [ZEEK_CSV_ROW.format(dur="0.5", label="Benign", family="-"),
                ZEEK_CSV_ROW.format(dur="", label="Malicious", family="C&C")]  # fmt: skip
    zeek_rows = [ZEEK_ROW.format(dur="1", label="Benign", family="-"), ZEEK_GOOD]
    texts = {
        "UNSW_NB15_part.csv": [UNSW_HEADER, ROW_NORMAL, ROW_ATTACK],
        "UNSW-NB15_9.csv": [raw_row(), raw_row(sport="0x000b", cat=" Fuzzers", label="1")],
        "x-labeled.csv": [ZEEK_CSV_HEADER, *zeek_csv],
        "c.conn.log.labeled": [*ZEEK_HEADER.splitlines(), *zeek_rows],
    }
    folder = tmp_path / end.encode().hex()
    folder.mkdir()
    return {name: write(folder, name, end.join(lines) + end) for name, lines in texts.items()}


@pytest.mark.parametrize("end", ["\r", "\r\n"])
def test_cr_only_and_crlf_files_read_like_lf_files(tmp_path, end):
    """Before: a CR-only file was one line ('missing column label' or one wrong-length record)."""
    for (name, lf), other in zip(_four_formats(tmp_path, "\n").items(), _four_formats(tmp_path, end).values()):
        read = reader_for(lf)
        expected, got = read(lf), read(other)
        assert got.frame.equals(expected.frame) and len(got) == 2, name
        lines = [(r.line, r.fields) for r in FlowSource(lf) if r is not None]
        assert [(r.line, r.fields) for r in FlowSource(other) if r is not None] == lines, name


def test_following_a_file_with_cr_ends_and_a_crlf_split_between_writes(tmp_path):
    """The gateway, following: a line ended by a lone \\r is complete; a \\n written after it ends no extra line."""
    import threading
    import time

    rows = [raw_row(sport=str(p)) for p in (1, 2, 3)]
    path = write(tmp_path, "UNSW-NB15_9.csv", rows[0] + "\r" + rows[1] + "\r")

    def append() -> None:
        time.sleep(0.3)
        with open(path, "ab") as handle:
            handle.write(("\n" + rows[2] + "\r\n").encode())

    writer = threading.Thread(target=append)
    writer.start()
    source = FlowSource(path, follow=True, idle_exit=1.0, poll=0.05)
    seen = [(r.line, r.values["src_port"]) for r in source if r is not None]
    writer.join()
    assert seen == [(1, "1"), (2, "2"), (3, "3")] and source.stats.malformed == Counter()


def test_other_unicode_line_breaks_do_not_split_a_record(tmp_path):
    """str.splitlines would split on \\x0b, \\x0c, \\x1c-\\x1e, \\x85 and \\u2028: here they stay in their cell
    (and are control characters there), so line numbers stay right."""
    for char in "\x0b\x0c\x1c\x1d\x1e\x85\u2028":
        path = unsw_file(tmp_path, [ROW_NORMAL, ROW_ATTACK.replace(",tcp,", f",t{char}cp,"), ROW_NORMAL])
        with pytest.raises(FlowDataError, match=r"any-name\.csv:3: control characters in a value; column 'proto'"):
            read_unsw_partitioned(path)


def test_raw_files_joined_with_cat_keep_a_bom_mid_file_that_is_not_part_of_an_address(tmp_path):
    """Each raw UNSW-NB15 file starts with a byte order mark; ``cat`` keeps the second one at a line start."""
    path = write(tmp_path, "UNSW-NB15_9.csv", "\ufeff" + raw_row() + "\n" + "\ufeff" + raw_row(sport="7") + "\n")
    assert read_unsw_raw(path).frame["src_ip"].tolist() == ["59.166.0.0"] * 2
    assert [r.values["src_ip"] for r in FlowSource(path)] == ["59.166.0.0"] * 2


# ---- compressed files ----------------------------------------------------------------------------------
def _zip(data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("UNSW_NB15_testing-set.csv", data)
    return buffer.getvalue()


@pytest.mark.parametrize("kind, pack, tool", [("gzip", gzip.compress, "gunzip"), ("xz", lzma.compress, "unxz"),
                                              ("bzip2", bz2.compress, "bunzip2"), ("zip", _zip, "unzip")])
def test_a_compressed_file_says_so(tmp_path, kind, pack, tool):
    """Before: 'not valid UTF-8 text at byte 1' with no hint (the gateway counted every line as not_utf8)."""
    path = write(tmp_path, "UNSW_NB15_testing-set.csv", pack((UNSW_HEADER + "\n" + ROW_NORMAL + "\n").encode()))
    for policy in ("error", "skip"):
        with pytest.raises(FlowDataError, match=rf"looks like a {kind}-compressed file; decompress it first; "
                                                rf"expected uncompressed text \(e\.g\. {tool} the file\)"):  # fmt: skip
            read_unsw_partitioned(path, bad_records=policy)
    with pytest.raises(SourceError, match=f"looks like a {kind}-compressed file; decompress it first"):
        FlowSource(path)


def test_text_that_starts_like_a_magic_number_is_still_text(tmp_path):
    path = write(tmp_path, "UNSW-NB15_9.csv", "BZh" + raw_row()[3:] + "\n")  # 'BZh1' but no bzip2 block after it
    with pytest.raises(FlowDataError, match="bad address; column 'src_ip'"):
        read_unsw_raw(path)


# ---- attack families -----------------------------------------------------------------------------------
def test_an_unknown_unsw_family_is_kept_and_counted(tmp_path):
    """Before: accepted without a word; partitioning by family would make it a class of its own."""
    path = unsw_file(tmp_path, [ROW_NORMAL, *[ROW_ATTACK.replace("Exploits", "Martians")] * 2,
                                ROW_ATTACK.replace("Exploits", " Backdoors")])  # fmt: skip
    table = read_unsw_partitioned(path)
    assert table.frame["attack_cat"].tolist() == ["Normal", "Martians", "Martians", "Backdoor"]
    assert "unknown_family: 2 records with an attack family not among the 10 known to unsw-nb15 (kept): " \
           "'Martians' (2)" in table.notes and table.skipped == {}  # fmt: skip
    raw_table = read_unsw_raw(write(tmp_path, "UNSW-NB15_9.csv", raw_row(cat=" Martians ", label="1") + "\n"))
    assert any(n.startswith("unknown_family: 1 records") for n in raw_table.notes)


def test_an_unknown_iot23_family_is_counted_and_stratosphere_has_no_closed_list(tmp_path):
    rows = [ZEEK_ROW.format(dur="1", label="Malicious", family=f) for f in ("DDoS", "Bogus", "-")]
    table = read_iot23_conn_log(write(tmp_path, "c.conn.log.labeled", ZEEK_HEADER + "\n".join(rows) + "\n"))
    assert table.frame["attack_cat"].tolist() == ["DDoS", "Bogus", "Malicious"]
    assert [n for n in table.notes if n.startswith("unknown_family")] == [
        "unknown_family: 1 records with an attack family not among the 18 known to iot-23 (kept): 'Bogus' (1)"]
    strat = ZEEK_HEADER.replace("detailed-label", "detailedlabel") + "\n".join(rows) + "\n"
    assert not any("unknown_family" in n for n in read_iot23_conn_log(write(tmp_path, "s.log", strat)).notes)


# ---- the gateway: headers ------------------------------------------------------------------------------
def test_a_gateway_header_without_a_needed_column_is_a_source_error(tmp_path):
    """Before: a KeyError from the normalisation (the readers check the header, the gateway did not)."""
    path = unsw_file(tmp_path, [ROW_NORMAL], header=UNSW_HEADER.replace(",label", ",lable"))
    with pytest.raises(SourceError, match=r"the header \(line 1\) lacks column\(s\) label that a unsw source"):
        list(FlowSource(path))
    log = write(tmp_path, "c.conn.log.labeled", ZEEK_HEADER.replace("\tduration\t", "\tdurtion\t") + ZEEK_GOOD)
    with pytest.raises(SourceError, match=r"#fields line\) lacks column\(s\) duration"):
        list(FlowSource(log))


# ---- the real data -------------------------------------------------------------------------------------
def test_the_real_files_hold_no_value_outside_its_domain_and_no_unknown_family(data_dir):
    """Every file of the parity list reads under bad_records=error (so no new domain rule rejects a real value)
    and none counts an unknown attack family."""
    from test_parity import SOURCES

    from flows.loader import load_file

    for dataset, relative in SOURCES:
        table = load_file(dataset, data_dir / relative)
        assert not [n for n in table.notes if n.startswith("unknown_family")], relative
        assert set(table.skipped) <= {"unlabelled_background"}, relative
