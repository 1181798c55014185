from moviectl.fastpath import main

if __name__ == "__main__":
    main()
