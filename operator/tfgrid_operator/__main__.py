from tfgrid_operator import cli

cli.main()
