from sheaf.cli import main

main()
