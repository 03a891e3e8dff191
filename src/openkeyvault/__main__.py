from openkeyvault.cli.main import main

main()
