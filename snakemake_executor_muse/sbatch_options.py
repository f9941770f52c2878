"""The sbatch option vocabulary that the plugin and the local service share.

Both sides read ``sbatch_list`` elements: the plugin checks a rule's
``slurm_extra`` before anything is uploaded, the service checks every request it
receives, and its SLURM backend builds the sbatch command line. They must agree
on which options take a value, what the short forms mean and which options the
service sets itself, so that knowledge lives here once. Importing this module is
cheap: it holds data only.
"""

#: short sbatch options and the long names they stand for
SHORT_OPTIONS = {
    "t": "time",
    "p": "partition",
    "c": "cpus-per-task",
    "A": "account",
    "q": "qos",
    "C": "constraint",
    "N": "nodes",
    "n": "ntasks",
    "G": "gpus",
    "w": "nodelist",
    "x": "exclude",
    "M": "clusters",
    "L": "licenses",
    "S": "core-spec",
    "m": "distribution",
    "s": "oversubscribe",
    "k": "no-kill",
    # the service owns these; listed so that a refusal names the long option
    "D": "chdir",
    "o": "output",
    "e": "error",
    "i": "input",
    "J": "job-name",
    "a": "array",
    "d": "dependency",
    "H": "hold",
    "W": "wait",
}

#: options that take no value
FLAG_OPTIONS = frozenset(
    {
        "exclusive",
        "requeue",
        "no-requeue",
        "overcommit",
        "contiguous",
        "spread-job",
        "use-min-nodes",
        "oversubscribe",
        "no-kill",
        "reboot",
    }
)

#: options the service sets itself, with the reason given to the user
SERVICE_OWNED_OPTIONS = {
    "chdir": "the job runs in its run folder",
    "output": "the service writes the job's stdout to __WS__stdout.txt",
    "error": "the service writes the job's stderr to __WS__stderr.txt",
    "input": "a file named stdin.txt in the run folder is the job's stdin",
    "open-mode": "the service owns the job's output files",
    "job-name": "the service names jobs <n>-ws-<software>",
    "wrap": "the service writes the job's batch script from cmd",
    "parsable": "the service reads sbatch's answer itself",
    "array": "one request is one job; send one request per task",
    "export": "the job's environment is set by the service",
    "export-file": "the job's environment is set by the service",
    "get-user-env": "the job's environment is set by the service",
    "uid": "jobs run as the service's user",
    "gid": "jobs run as the service's group",
    "wait": "submission returns at once; poll the state URL",
    "test-only": "every request submits a job",
    "dependency": "the service submits jobs one by one, without dependencies",
    "hold": "a held job would never start",
}

#: options the plugin sets itself from a job (so ``slurm_extra`` may not)
PLUGIN_OWNED_OPTIONS = {
    "comment": "the plugin puts the rule and wildcards there",
}
