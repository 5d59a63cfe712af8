/*
 * cli: the subcommands of the one binary, and the sendmail front end.
 *
 * Each *_main() takes the arguments after its own name (argv[0] is the subcommand) and
 * returns a sysexits.h code. Commands that read data work on the store directly, so they
 * work whether or not the daemon runs; they take -c FILE and --json where output is data.
 */
#ifndef MB_CLI_H
#define MB_CLI_H

/* mailbridge sendmail ..., or the binary run as "sendmail". */
int cli_sendmail_main(int argc, char **argv);

int cli_serve_main(int argc, char **argv);
int cli_config_main(int argc, char **argv);
int cli_queue_main(int argc, char **argv);
int cli_log_main(int argc, char **argv);
int cli_hash_password_main(int argc, char **argv);
int cli_connection_main(int argc, char **argv);
int cli_auth_main(int argc, char **argv);
int cli_test_main(int argc, char **argv);
int cli_backup_main(int argc, char **argv);
int cli_doctor_main(int argc, char **argv);
int cli_setup_main(int argc, char **argv);
int cli_admin_main(int argc, char **argv);

#endif
