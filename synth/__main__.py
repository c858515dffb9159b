from .flow import main

main()
