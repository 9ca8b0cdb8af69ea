"""One module per `platform` subcommand; cli.COMMANDS is the table that names them."""
