"""sbatch_list and module_list: accepted forms, normalisation, refusals."""

import pytest

from snakemake_executor_muse.service.sbatch import (
    SbatchOptionError,
    option_value,
    parse_module_list,
    parse_sbatch_list,
    time_limit_seconds,
)


class TestAcceptedForms:
    @pytest.mark.parametrize(
        "elements",
        [
            ["time=10"],
            ["--time=10"],
            ["--time 10"],
            ["--time", "10"],
            ["-t 10"],
            ["-t", "10"],
            ["-t10"],
            [" time = 10 "],
        ],
    )
    def test_every_form_of_one_option_normalises_alike(self, elements):
        assert parse_sbatch_list(elements) == [("time", "10")]

    @pytest.mark.parametrize(
        ("short", "long"),
        [
            ("-p", "partition"),
            ("-c", "cpus-per-task"),
            ("-A", "account"),
            ("-q", "qos"),
            ("-C", "constraint"),
            ("-N", "nodes"),
            ("-n", "ntasks"),
            ("-G", "gpus"),
        ],
    )
    def test_short_options_map_to_long_names(self, short, long):
        assert parse_sbatch_list([f"{short} 2"]) == [(long, "2")]

    def test_several_options_keep_their_order(self):
        parsed = parse_sbatch_list(
            ["--mem=1G", "-c", "2", "partition=short", "--exclusive", "--qos", "hi"]
        )
        assert parsed == [
            ("mem", "1G"),
            ("cpus-per-task", "2"),
            ("partition", "short"),
            ("exclusive", ""),
            ("qos", "hi"),
        ]

    def test_mail_type_defaults_to_all_with_mail_user(self):
        parsed = parse_sbatch_list(["mail-user=me@example.org"])
        assert parsed == [("mail-user", "me@example.org"), ("mail-type", "ALL")]

    def test_mail_type_given_is_kept(self):
        parsed = parse_sbatch_list(["mail-user=me@example.org", "mail-type=END"])
        assert option_value(parsed, "mail-type") == "END"
        assert len(parsed) == 2

    def test_value_with_equals_sign_is_kept_whole(self):
        assert parse_sbatch_list(["--gres=gpu:a100:1"]) == [("gres", "gpu:a100:1")]

    def test_last_value_wins(self):
        assert option_value([("time", "1"), ("time", "2")], "time") == "2"


class TestRefusals:
    @pytest.mark.parametrize(
        ("element", "named"),
        [
            ("--chdir=/tmp", "--chdir"),
            ("-D /tmp", "--chdir"),
            ("output=x.txt", "--output"),
            ("-o x", "--output"),
            ("--error=e", "--error"),
            ("-e e", "--error"),
            ("--job-name=x", "--job-name"),
            ("-J x", "--job-name"),
            ("--wrap=ls", "--wrap"),
            ("--parsable", "--parsable"),
            ("--array=1-3", "--array"),
            ("--export=ALL", "--export"),
        ],
    )
    def test_options_owned_by_the_service(self, element, named):
        with pytest.raises(SbatchOptionError) as caught:
            parse_sbatch_list([element])
        assert repr(element) in str(caught.value)
        assert f"{named} is set by the service" in str(caught.value)

    @pytest.mark.parametrize("element", ["time=10\n#SBATCH -o /x", "mem=1G\0", "a\rb"])
    def test_newlines_and_nul_are_refused(self, element):
        with pytest.raises(SbatchOptionError, match="newline or NUL"):
            parse_sbatch_list([element])

    def test_newline_in_a_following_value_is_refused(self):
        with pytest.raises(SbatchOptionError, match="newline or NUL"):
            parse_sbatch_list(["--time", "10\n"])

    @pytest.mark.parametrize(
        ("elements", "message"),
        [
            (["--time"], "needs a value"),
            (["--time", "--mem=1G"], "needs a value"),
            (["-Z 3"], "unknown short option -Z"),
            (["Time=10"], "not an sbatch option name"),
            (["time=soon"], "is not a SLURM time"),
            (["cpus-per-task=0"], "positive integer"),
            (["-c two"], "positive integer"),
            ([""], "is empty"),
        ],
    )
    def test_malformed_elements(self, elements, message):
        with pytest.raises(SbatchOptionError, match=message) as caught:
            parse_sbatch_list(elements)
        assert caught.value.more


class TestTime:
    @pytest.mark.parametrize(
        ("value", "seconds"),
        [
            ("10", 600),
            ("00:02", 2),
            ("1:30", 90),
            ("01:00:00", 3600),
            ("2-3", 2 * 86400 + 3 * 3600),
            ("1-00:30", 86400 + 1800),
            ("1-01:01:01", 86400 + 3661),
        ],
    )
    def test_slurm_time_forms(self, value, seconds):
        assert time_limit_seconds(value) == seconds

    def test_unlimited(self):
        assert time_limit_seconds("UNLIMITED") is None


class TestModules:
    def test_names_are_kept_in_order(self):
        names = ["toolA/1.2", "toolB/3.4", "R/4.2.0-foss"]
        assert parse_module_list(names) == names

    @pytest.mark.parametrize("name", ["a b", "x;rm -rf /", "$(id)", "a`b`", ""])
    def test_shell_text_is_refused(self, name):
        with pytest.raises(SbatchOptionError, match="not a module name"):
            parse_module_list([name])
