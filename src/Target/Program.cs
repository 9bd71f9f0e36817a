Console.Error.WriteLine("The target server arrives with the precopy migration issue."); return 2;
