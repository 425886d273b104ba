# Shared by the launch scripts (sourced, not run). Expects $dry_run (0/1) and $script.

usage() {  # the script's header comment, without the leading '# '
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
  exit "${1:-0}"
}

die() { echo "$script: $*" >&2; exit 2; }

run() {  # prints the command (shell-quoted, copy-pasteable) in dry-run, else runs it
  if [ "$dry_run" = 1 ]; then
    printf '%q ' "$@"; printf '\n'
  else
    "$@"
  fi
}
