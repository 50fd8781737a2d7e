; LlamaRunner Pro for Windows: a per-user installer that needs no administrator rights.
;
; Built by installer/windows/build_installer.py after the one-folder bundle passed its
; self-test; it passes the values below with /D. Compiling by hand (Inno Setup 6.3+):
;   ISCC /DAppVersion=0.1.0 /DBundleDir=C:\src\dist\llamarunner installer\windows\llamarunner.iss

#if VER < EncodeVer(6, 3, 0)
  #error Inno Setup 6.3 or newer is needed (x64compatible architecture identifier)
#endif

#ifndef AppVersion
  #error Define the app version: ISCC /DAppVersion=X.Y.Z (build_installer.py does)
#endif
; VERSIONINFO needs up to four numbers, which a version like 1.0.0rc1 is not.
#ifndef FileVersion
  #define FileVersion "0.0.0.0"
#endif
#ifndef BundleDir
  #define BundleDir "..\..\dist\llamarunner"
#endif
#ifndef OutputDir
  #define OutputDir "..\..\dist"
#endif
#ifndef IconFile
  #define IconFile AddBackslash(SourcePath) + "..\..\resources\icons\app.ico"
#endif

#define AppName "LlamaRunner Pro"
#define AppExeName "llamarunner.exe"
#define StopScript "stop-app.ps1"
; The value the app's own "Start at login" switch writes (llamarunner.integration.autostart):
; the same name and data here, so the installer's task and the app's switch agree.
#define RunKey "Software\Microsoft\Windows\CurrentVersion\Run"
#define RunValueName "LlamaRunner Pro"
; Where Task Manager records that a Run entry was disabled; stale once the entry is gone.
#define StartupApprovedKey "Software\Microsoft\Windows\CurrentVersion\Explorer\StartupApproved\Run"
; The app's per-user folder (platformdirs: %LOCALAPPDATA%\llamarunner holds config, logs,
; caches and the default models folder) and its window-layout settings (QSettings).
#define DataDirName "llamarunner"
#define SettingsKey "Software\llamarunner"

[Setup]
; Never change AppId: it is how an upgrade finds the installed copy.
AppId={{E8AC2F04-664E-491A-B576-8202A0A0D4BA}
AppName={#AppName}
AppVersion={#AppVersion}
AppVerName={#AppName} {#AppVersion}
AppPublisher={#AppName}
VersionInfoVersion={#FileVersion}
VersionInfoProductName={#AppName}
VersionInfoProductTextVersion={#AppVersion}
; Per user, no UAC prompt: {autopf} is then %LOCALAPPDATA%\Programs.
PrivilegesRequired=lowest
DefaultDirName={autopf}\{#AppName}
DefaultGroupName={#AppName}
DisableProgramGroupPage=yes
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
MinVersion=10.0
OutputDir={#OutputDir}
OutputBaseFilename=LlamaRunnerPro-{#AppVersion}-windows-x64-setup
#if FileExists(IconFile)
SetupIconFile={#IconFile}
#endif
UninstallDisplayIcon={app}\{#AppExeName}
UninstallDisplayName={#AppName}
Compression=lzma2/ultra64
SolidCompression=yes
; ultra64's dictionary needs more memory than the 32-bit compiler can always get; a
; separate process (64-bit on a 64-bit host) does the compressing instead.
LZMAUseSeparateProcess=yes
WizardStyle=modern
; The [Code] below stops the app before files are replaced; Restart Manager stays as a net
; for anything else holding them, but must not relaunch the app: [Run] offers that.
CloseApplications=yes
RestartApplications=no
SetupMutex=LlamaRunnerProSetup

[Languages]
Name: "english"; MessagesFile: "compiler:Default.isl"

[CustomMessages]
english.StartAtLogin=Start %1 when I sign in to Windows
english.StartupGroup=Startup:
english.RemoveUserData=Also remove your settings, logs and caches in%n%1?%n%nModels in %2 are kept either way.

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked
Name: "startatlogin"; Description: "{cm:StartAtLogin,{#AppName}}"; GroupDescription: "{cm:StartupGroup}"; Flags: unchecked

[InstallDelete]
; An upgrade replaces the bundle whole: modules an older version shipped must not linger.
Type: filesandordirs; Name: "{app}\_internal"
Type: filesandordirs; Name: "{app}\runtime"

[Files]
Source: "{#BundleDir}\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs
Source: "{#StopScript}"; DestDir: "{app}"; Flags: ignoreversion

[Icons]
Name: "{autoprograms}\{#AppName}"; Filename: "{app}\{#AppExeName}"; WorkingDir: "{app}"
Name: "{autodesktop}\{#AppName}"; Filename: "{app}\{#AppExeName}"; WorkingDir: "{app}"; Tasks: desktopicon

[Registry]
; Quoted absolute path, exactly as the app writes it. The [Code] below also removes a value
; the app itself created, which this entry's flag alone would leave behind.
Root: HKCU; Subkey: "{#RunKey}"; ValueType: string; ValueName: "{#RunValueName}"; ValueData: """{app}\{#AppExeName}"""; Flags: uninsdeletevalue; Tasks: startatlogin

[Run]
; The app keeps the login item in step with its desktop.start_at_login key and would remove
; a value it finds without it at first start; `autostart enable` writes both together.
Filename: "{app}\{#AppExeName}"; Parameters: "autostart enable"; Flags: runhidden waituntilterminated; Tasks: startatlogin
Filename: "{app}\{#AppExeName}"; Description: "{cm:LaunchProgram,{#AppName}}"; Flags: nowait postinstall skipifsilent

[UninstallDelete]
; Whatever the app or a crash left inside its own folders; never the user's data folder.
Type: filesandordirs; Name: "{app}\_internal"
Type: filesandordirs; Name: "{app}\runtime"
Type: dirifempty; Name: "{app}"

[Code]
function AppExePath(): String;
begin
  Result := ExpandConstant('{app}\{#AppExeName}');
end;

function DataDir(): String;
begin
  Result := ExpandConstant('{localappdata}\{#DataDirName}');
end;

// ' /PID n' for each {#AppExeName} started from {app}, as WMI lists them; False when WMI
// could not answer. Other copies of the app (another install, a pip install) are left out.
function ListAppProcesses(var PidArgs: String): Boolean;
var
  Locator, Service, Processes, Process: Variant;
  I: Integer;
begin
  PidArgs := '';
  Result := False;
  try
    Locator := CreateOleObject('WbemScripting.SWbemLocator');
    Service := Locator.ConnectServer('.', 'root\CIMV2');
    Processes := Service.ExecQuery('SELECT ProcessId, ExecutablePath FROM Win32_Process'
      + ' WHERE Name = ''{#AppExeName}''');
    for I := 0 to Processes.Count - 1 do
    begin
      Process := Processes.ItemIndex(I);
      if not VarIsNull(Process.ExecutablePath) then
        if CompareText(Process.ExecutablePath, AppExePath()) = 0 then
          PidArgs := PidArgs + ' /PID ' + IntToStr(Process.ProcessId);
    end;
    Result := True;
  except
    Log('Cannot list running processes: ' + GetExceptionMessage());
  end;
end;

// Ask the running app to quit through its single-instance endpoint, so that it stops its
// llama-server runners itself (stop-app.ps1, which also ends what does not quit in time).
// Then, whatever the script did or could not do (no PowerShell, a policy that forbids
// scripts), end every process tree still running from {app}; when even that cannot be
// told, end every {#AppExeName} tree.
procedure StopRunningApp();
var
  Script, PowerShell, TaskKill, PidArgs: String;
  ResultCode, Waited: Integer;
begin
  Script := ExpandConstant('{app}\{#StopScript}');
  PowerShell := ExpandConstant('{sys}\WindowsPowerShell\v1.0\powershell.exe');
  TaskKill := ExpandConstant('{sys}\taskkill.exe');
  if FileExists(Script) and FileExists(PowerShell) then
  begin
    Log('Stopping ' + AppExePath() + ' with ' + Script);
    if Exec(PowerShell, '-NoLogo -NoProfile -NonInteractive -ExecutionPolicy Bypass -File "'
        + Script + '" -AppDir "' + ExpandConstant('{app}') + '"',
        '', SW_HIDE, ewWaitUntilTerminated, ResultCode) then
      Log(Format('stop script exit status %d', [ResultCode]));
  end;
  if ListAppProcesses(PidArgs) then
  begin
    if PidArgs <> '' then
    begin
      Log('Still running; ending process tree(s)' + PidArgs);
      Exec(TaskKill, '/T /F' + PidArgs, '', SW_HIDE, ewWaitUntilTerminated, ResultCode);
      Waited := 0;
      while (Waited < 5000) and ListAppProcesses(PidArgs) and (PidArgs <> '') do
      begin
        Sleep(250);
        Waited := Waited + 250;
      end;
    end;
  end
  else
  begin
    Log('Ending every {#AppExeName} with taskkill');
    Exec(TaskKill, '/IM {#AppExeName} /T /F', '', SW_HIDE, ewWaitUntilTerminated, ResultCode);
  end;
end;

// Remove the login item whoever created it (this installer's task or the app's own switch),
// but only when it starts this copy: another install's entry is not ours to delete.
procedure RemoveAutostart();
var
  Data: String;
begin
  if RegQueryStringValue(HKCU, '{#RunKey}', '{#RunValueName}', Data) then
  begin
    if Pos(Lowercase(AppExePath()), Lowercase(Data)) > 0 then
    begin
      Log('Removing the login item: ' + Data);
      RegDeleteValue(HKCU, '{#RunKey}', '{#RunValueName}');
      RegDeleteValue(HKCU, '{#StartupApprovedKey}', '{#RunValueName}');
    end;
  end;
end;

// Settings, logs, caches and instance files go; the models folder stays.
procedure RemoveUserData();
var
  FindRec: TFindRec;
  Path: String;
begin
  if FindFirst(DataDir() + '\*', FindRec) then
  begin
    try
      repeat
        if (FindRec.Name <> '.') and (FindRec.Name <> '..')
          and (CompareText(FindRec.Name, 'models') <> 0) then
        begin
          Path := DataDir() + '\' + FindRec.Name;
          if FindRec.Attributes and FILE_ATTRIBUTE_DIRECTORY <> 0 then
            DelTree(Path, True, True, True)
          else
            DeleteFile(Path);
        end;
      until not FindNext(FindRec);
    finally
      FindClose(FindRec);
    end;
  end;
  RemoveDir(DataDir());
  RegDeleteKeyIncludingSubkeys(HKCU, '{#SettingsKey}');
end;

function PrepareToInstall(var NeedsRestart: Boolean): String;
begin
  // Only an installed copy can be running from {app}; never touch other installs.
  if FileExists(AppExePath()) then
    StopRunningApp();
  Result := '';
end;

procedure CurUninstallStepChanged(CurUninstallStep: TUninstallStep);
var
  Question: String;
begin
  case CurUninstallStep of
    usUninstall:
      begin
        StopRunningApp();
        RemoveAutostart();
      end;
    usPostUninstall:
      begin
        // Only when asked, and never during a silent uninstall. (No line of this
        // section may start with a bracket: ISCC would read it as a section tag.)
        if (not UninstallSilent()) and DirExists(DataDir()) then
        begin
          Question := FmtMessage(CustomMessage('RemoveUserData'), [DataDir(),
            DataDir() + '\models']);
          if MsgBox(Question, mbConfirmation, MB_YESNO or MB_DEFBUTTON2) = IDYES then
            RemoveUserData();
        end;
      end;
  end;
end;
